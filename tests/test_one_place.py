"""One home per loss fact: a hyperparameter declared once in `adadpo.losses.hparams` (and read by a loss as a
keyword argument) is a config field with its default and help, a `--help` line, a checked recipe key, a line of the
resolved recipe a run saves, and the value the loss computes with; nothing else is edited.

The declaration has to exist before `adadpo.config` builds its dataclass, so the check runs in a fresh interpreter
that declares a made-up `toy_weight` and a loss `toy` reading it, then goes through the real parsing and loss code."""

import json
import subprocess
import sys
import textwrap

from tests.helpers.runs import harness_env


DECLARE_AND_USE = textwrap.dedent(
    """
    import json, sys
    import torch, yaml
    from adadpo.losses import LOSS_HPARAMS, LOSS_SPECS, PreferenceLoss, preference_loss
    from adadpo.losses.dpo_family import dpo_loss
    from adadpo.losses.hparams import number
    from adadpo.losses.types import LossSpec

    # ---- the one declaration (and a loss that reads it) ----
    LOSS_HPARAMS["toy_weight"] = number("toy_weight", 0.25, lambda x: x > 0, "> 0", help="A made-up weight, 7f3a.")

    def toy_loss(inputs, *, beta, toy_weight):
        return dpo_loss(inputs, beta=beta * toy_weight, label_smoothing=0.0, f_divergence_type="reverse_kl",
                        f_alpha_divergence_coef=1.0)

    LOSS_SPECS["toy"] = LossSpec("toy", toy_loss, needs_reference=True, formula="dpo at beta*w", paper="none")

    # ---- everything else is found, not written ----
    import dataclasses
    from adadpo.config import AdaDPOConfig
    from adadpo.recipe import parse_args, recipe_help, save_resolved_config

    out, recipe = sys.argv[1], sys.argv[2]
    field = {f.name: f for f in dataclasses.fields(AdaDPOConfig)}["toy_weight"]
    _, args, _ = parse_args(["--config", recipe, "--toy_weight=0.5"])
    saved = yaml.safe_load(save_resolved_config(out, args).read_text())
    loss = PreferenceLoss.from_config(args)
    batch = dict(policy_chosen_logps=torch.tensor([-3.0, -5.0]), policy_rejected_logps=torch.tensor([-4.0, -4.5]),
                 chosen_lengths=torch.tensor([3.0, 5.0]), rejected_lengths=torch.tensor([4.0, 4.0]),
                 ref_chosen_logps=torch.tensor([-3.5, -4.0]), ref_rejected_logps=torch.tensor([-3.0, -4.0]))
    try:
        parse_args(["--config", recipe, "--toy_weight=-1.0"])
        refused = ""
    except ValueError as error:
        refused = str(error)
    help_line = [l for l in recipe_help().splitlines() if l.startswith("  --toy_weight ")]
    print(json.dumps({
        "default": field.default, "help": field.metadata["help"], "type": str(field.type),
        "parsed": args.toy_weight, "loss_hparams": loss.hparams, "saved": saved.get("toy_weight"),
        "loss": loss(**batch).losses.tolist(), "dpo_at_beta_half": preference_loss("dpo", beta=0.05, **batch).losses.tolist(),
        "refused": refused, "help_line": help_line, "help_text": "A made-up weight, 7f3a." in recipe_help(),
    }))
    """
)


def test_a_hyperparameter_declared_once_is_everywhere(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "model_name_or_path: m\ndataset_name: d.jsonl\nloss_type: toy\nbeta: 0.1\nuse_cpu: true\nbf16: false\n"
        f"report_to: none\noutput_dir: {tmp_path / 'out'}\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", DECLARE_AND_USE, str(tmp_path / "out"), str(recipe)],
        env=harness_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert (
        found["default"] == 0.25 and found["help"] == "A made-up weight, 7f3a." and found["type"] == "<class 'float'>"
    )
    assert found["parsed"] == 0.5 and found["saved"] == 0.5  # recipe key, command line, resolved recipe
    assert found["loss_hparams"] == {"beta": 0.1, "toy_weight": 0.5}  # the loss reads it from its signature
    assert found["loss"] == found["dpo_at_beta_half"]  # and computes with it: dpo at beta * 0.5
    assert "`toy_weight` must be a finite number > 0, got -1.0" in found["refused"]
    assert found["help_line"] == ["  --toy_weight  (default: 0.25)"] and found["help_text"]
