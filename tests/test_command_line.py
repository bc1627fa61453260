"""The recipe command line of `scripts/run_adadpo.py` (and `scripts/preflight.py`): `--help` lists every recipe key by
what it controls, with its default and help text; `--no_<flag>` switches off a boolean that defaults to true, as
HfArgumentParser documents; anything else unknown is refused with the closest key."""

import dataclasses
import re
import subprocess
import sys

import pytest

from adadpo.losses import LOSS_HPARAMS
from adadpo.recipe import HELP_GROUPS, config_fields, help_group, parse_args, recipe_help
from tests.helpers.runs import REPO_ROOT, harness_env


def cli_args(tmp_path, *extra):
    base = ["--model_name_or_path=m", "--dataset_name=d.jsonl", f"--output_dir={tmp_path}", "--use_cpu=true"]
    return [*base, "--bf16=false", "--report_to=none", *extra]


def test_help_lists_every_key_once_by_group_with_default_and_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text == recipe_help() + "\n"
    headers = [line for line in text.splitlines() if re.fullmatch(r"\w+ \(\d+ keys\)", line)]
    assert [h.split(" (")[0] for h in headers] == list(HELP_GROUPS)
    listed = [line.split()[0][2:] for line in text.splitlines() if line.startswith("  --")]
    expected = [name for name, field in config_fields().items() if field.init and not name.startswith("_")]
    assert sorted(listed) == sorted(expected) and len(listed) == len(set(listed))
    lines = text.splitlines()
    for name in ("beta", "adadpo_clip", "learning_rate", "model_name_or_path", "dataset_mixture", "hub_model_id"):
        (at,) = [i for i, line in enumerate(lines) if line.startswith(f"  --{name} ")]
        help_text = " ".join(str(config_fields()[name].metadata.get("help", "")).split())
        assert lines[at + 1].strip().startswith(help_text[:40]), name
    assert "  --adadpo_clip  (default: 2.0)" in lines
    assert "Choices: ratio, policy." in text


def test_help_groups_say_what_each_key_controls():
    assert help_group("model_name_or_path") == "model" and help_group("attn_implementation") == "model"
    assert help_group("dataset_mixture") == "data" and help_group("max_drop_fraction") == "data"
    assert help_group("loss_type") == "loss" and all(help_group(name) == "loss" for name in LOSS_HPARAMS)
    assert help_group("hub_model_id") == "Hub" and help_group("push_to_hub") == "Hub"
    assert help_group("learning_rate") == "training" and help_group("global_batch_size") == "training"


def test_scripts_answer_help_and_exit_zero():
    for script in ("run_adadpo.py", "preflight.py"):
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "scripts" / script), "--help"],
            env=harness_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert "--beta  (default: 0.1)" in result.stdout and "Traceback" not in result.stderr
    assert "--report" in result.stdout  # preflight's own options come first


def test_no_flag_switches_off_a_boolean_that_defaults_to_true(tmp_path):
    flags = [n for n, f in config_fields().items() if f.type in (bool, "bool") and f.default is True]
    assert "adadpo_length_normalize" in flags
    _, args, _ = parse_args(cli_args(tmp_path, "--loss_type=adadpo", "--no_adadpo_length_normalize"))
    assert args.adadpo_length_normalize is False
    _, args, _ = parse_args(
        cli_args(tmp_path, "--loss_type=dpo", "--gradient_checkpointing=true", "--no_gradient_checkpointing")
    )
    assert args.gradient_checkpointing is False
    _, args, _ = parse_args(cli_args(tmp_path, "--loss_type=adadpo"))
    assert args.adadpo_length_normalize is True


def test_no_prefix_on_anything_else_is_an_unknown_key(tmp_path):
    with pytest.raises(ValueError, match="`no_beta` is not a field"):
        parse_args(cli_args(tmp_path, "--no_beta"))
    false_by_default = next(n for n, f in config_fields().items() if f.type in (bool, "bool") and f.default is False)
    with pytest.raises(ValueError, match=f"`no_{false_by_default}` is not a field"):
        parse_args(cli_args(tmp_path, f"--no_{false_by_default}"))


def test_every_field_has_a_group():
    assert {help_group(name) for name in config_fields()} <= set(HELP_GROUPS)
    assert all(isinstance(f, dataclasses.Field) for f in config_fields().values())
