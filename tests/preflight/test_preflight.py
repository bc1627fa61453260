"""scripts/preflight.py end to end on the tiny model: PASS on good recipes, FAIL (naming the fix) on the mistakes it
exists to catch, WARN on a truncating max_length, and nothing written under output_dir."""

import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

import adadpo.preflight.packing
from adadpo.cli import preflight as preflight_cli
from adadpo.losses import PreferenceLoss
from adadpo.preflight.report import Report
from adadpo.preflight.runner import check_micro_batches
from adadpo.testing import CHATML_TEMPLATE, save_tiny_model
from tests.helpers.runs import REPO_ROOT, tiny_run_args


@pytest.fixture(scope="module")
def preflight():
    return preflight_cli


def run(preflight, tmp_path, model_dir, data, *extra, **overrides):
    """(exit code, report rows by name, report) of one in-process preflight; checks output_dir stays absent."""
    output_dir = tmp_path / "out"
    report_path = tmp_path / "report.json"
    argv = tiny_run_args(model_dir, data, output_dir, **{"max_steps": None, "save_strategy": None, **overrides})
    code = preflight.main([*argv, "--report", str(report_path), "--sample_rows=32", *extra])
    assert not output_dir.exists()
    report = json.loads(report_path.read_text())
    return code, {c["name"]: c for c in report["checks"]}, report


def failed(rows):
    return {name: row for name, row in rows.items() if row["status"] == "FAIL"}


GOOD_RECIPES = {
    "padded-adadpo": {},
    "packed-sdpa": {"padding_free": True},
    "ipo": {"loss_type": "ipo"},
    "simpo": {"loss_type": "simpo"},
    # beta_w depends on the policy's P_w / P_l under the policy balance: no step-0 beta_w row (was a false FAIL)
    "adadpo-policy-balance": {"adadpo_balance": "policy"},
    "ada_rdpo-policy-balance": {"loss_type": "ada_rdpo", "adadpo_balance": "policy"},
}


@pytest.mark.parametrize("overrides", list(GOOD_RECIPES.values()), ids=list(GOOD_RECIPES))
def test_passes_on_good_recipes(preflight, tiny_model_dir, pref_jsonl, tmp_path, overrides):
    code, rows, report = run(preflight, tmp_path, tiny_model_dir, pref_jsonl, **overrides)
    assert code == 0 and report["status"] == "PASS", failed(rows)
    fixed_beta_w = overrides.get("loss_type", "adadpo") in ("adadpo", "ada_rdpo") and "adadpo_balance" not in overrides
    assert ("beta_w == beta min(k, C)" in rows) == fixed_beta_w
    assert rows["weights restored after the steps"]["status"] == "PASS"
    if overrides.get("padding_free"):
        assert rows["negative control (positions not restarted) differs"]["status"] == "PASS"
    assert report["details"]["step0_loss"] == pytest.approx(
        {"ipo": 1 / (4 * 0.1**2)}.get(overrides.get("loss_type"), report["details"]["step0_loss"])
    )


def test_passes_packed_on_the_flash_varlen_path(preflight, tiny_model_dir, pref_jsonl, tmp_path, emulated_flash):
    code, rows, report = run(preflight, tmp_path, tiny_model_dir, pref_jsonl, padding_free=True,
                             attn_implementation="flash_attention_2")  # fmt: skip
    assert code == 0, failed(rows)
    assert "packed (flash_attention_2) == padded (sdpa)" in rows


def test_fails_on_an_attention_that_ignores_packed_boundaries(
    preflight, tiny_model_dir, pref_jsonl, tmp_path, leaky_attention
):
    code, rows, _ = run(preflight, tmp_path, tiny_model_dir, pref_jsonl, padding_free=True)
    assert code == 1
    assert set(failed(rows)) == {"packed (sdpa) == padded (sdpa)"}
    assert "padding_free: false" in rows["packed (sdpa) == padded (sdpa)"]["fix"]


def test_fails_when_the_negative_control_cannot_differ(preflight, tiny_model_dir, pref_jsonl, tmp_path, monkeypatch):
    """The negative control is a check of its own: a control that cannot differ from the packed run (here its
    positions restart like the packed row's) leaves the packing check blind to a leak, so its row must FAIL and the
    exit code be 1 (a control forced to PASS would hide that)."""
    monkeypatch.setattr(adadpo.preflight.packing, "_unrestarted", lambda batch: batch)
    code, rows, _ = run(preflight, tmp_path, tiny_model_dir, pref_jsonl, padding_free=True)
    control = "negative control (positions not restarted) differs"
    assert code == 1 and set(failed(rows)) == {control}
    assert "padding_free: false" in rows[control]["fix"]


def test_fails_on_a_template_that_adds_a_second_bos(preflight, tiny_model_dir, pref_jsonl, tmp_path):
    template = "{{ bos_token }}{{ bos_token }}" + CHATML_TEMPLATE
    code, rows, _ = run(preflight, tmp_path, tiny_model_dir, pref_jsonl, chat_template=template)
    assert code == 1 and "at most one BOS" in failed(rows)
    assert "bos_token" in rows["at most one BOS"]["fix"] and "chat_template" in rows["at most one BOS"]["fix"]


def test_fails_when_the_prompt_is_not_a_prefix(preflight, tiny_model_dir, pref_jsonl, tmp_path):
    # The generation prompt says "assistant\n", the rendered reply "assistant:" (a recurring new-family mistake).
    template = CHATML_TEMPLATE.replace(
        "{{ '<|im_start|>' + message['role'] + '\n'",
        "{{ '<|im_start|>' + message['role'] + (':' if message['role'] == 'assistant' else '\n')",
    )
    code, rows, _ = run(preflight, tmp_path, tiny_model_dir, pref_jsonl, chat_template=template)
    row = rows["prompt is a prefix of prompt+completion"]
    assert code == 1 and row["status"] == "FAIL" and "chat_template" in row["fix"], row


def test_warns_when_max_length_truncates_most_completions(preflight, tiny_model_dir, pref_jsonl, tmp_path):
    code, rows, _ = run(preflight, tmp_path, tiny_model_dir, pref_jsonl, max_length=30)
    row = rows["pairs cut by max_length"]
    assert code == 0 and row["status"] == "WARN" and "max_length: 64" in row["fix"], row


def test_fails_on_a_reference_cache_entry_from_other_weights(
    preflight, run_adadpo, tiny_model_dir, pref_jsonl, tmp_path
):
    """A training run of another model writes its entry; moved under this model's key, preflight must catch it."""
    cache = tmp_path / "ref_cache"
    cached = {"precompute_ref_log_probs": True, "ref_logps_cache_dir": str(cache), "loss_type": "dpo"}
    _, rows, _ = run(preflight, tmp_path, tiny_model_dir, pref_jsonl, **cached)
    assert "(miss)" in rows["reference"]["value"]
    key = rows["reference"]["value"].split("cache key ")[1].split()[0]
    other = save_tiny_model(tmp_path / "other", seed=7)
    argv = tiny_run_args(other, pref_jsonl, tmp_path / "other-run", max_steps=1, **cached)
    run_adadpo.main(*run_adadpo.parse_args(argv), argv=argv)
    (entry,) = [p for p in cache.iterdir() if p.name != key]
    shutil.move(entry, cache / key)
    code, rows, _ = run(preflight, tmp_path, tiny_model_dir, pref_jsonl, **cached)
    assert code == 1 and "(hit)" in rows["reference"]["value"]
    assert rows["reference"]["status"] == "FAIL" and f"delete {cache / key}" in rows["reference"]["fix"]
    assert rows["reference log-probs == policy"]["status"] == "FAIL"
    assert rows["dpo loss == closed form"]["status"] == "FAIL"  # the step-0 loss is no longer ln 2


def launch(config, argv, cwd):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           str(REPO_ROOT / "scripts" / "preflight.py"), *argv]  # fmt: skip
    env = {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    import os

    return subprocess.run(cmd, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["cpu_2proc", "zero3"])
def test_passes_on_two_processes(tiny_model_dir, pref_jsonl, tmp_path, launcher):
    from tests.helpers.distributed_harness import deepspeed_launch_config

    config = (REPO_ROOT / "accelerate_configs" / "cpu_2proc.yaml") if launcher == "cpu_2proc" else (
        deepspeed_launch_config(tmp_path, stage=3))  # fmt: skip
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "out", max_steps=None, save_strategy=None,
                         global_batch_size=8, padding_free=True)  # fmt: skip
    result = launch(config, [*argv, "--report", str(tmp_path / "r.json"), "--sample_rows=32"], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {c["name"]: c for c in json.loads((tmp_path / "r.json").read_text())["checks"]}
    assert rows["processes x per-device batch x accumulation"]["value"].startswith("2 x 2 x 2 = 8")
    assert rows["every rank: same loss for the same pairs"]["value"].startswith("2 ranks")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "recipe", sorted(p for p in (REPO_ROOT / "recipes").glob("*/*/config_*.yaml") if p.parent.name != "generate")
)
def test_every_training_recipe_parses_through_preflight(preflight, recipe, tmp_path):
    """The GPU recipes parse here (on CPU: `use_cpu`); the CPU one runs end to end in docs/preflight.md."""
    argv = [
        "--config",
        str(recipe),
        "--report",
        "x.json",
        "--use_cpu",
        "true",
        "--batches=3",
        f"--output_dir={tmp_path}",
    ]
    options, rest = preflight.split_options(argv)
    assert options == {"report": "x.json", "sample_rows": 256, "batches": 3}
    script_args, training_args, model_args = preflight.parse_args(rest)
    assert model_args.model_name_or_path and training_args.loss_type


def test_no_micro_batch_is_one_fail_row_not_a_crash():
    """An empty train split gives checks 2-4 no micro-batch: one FAIL row naming the data, no exception from the
    checks that compare batches, and a report that stays JSON (no NaN)."""
    trainer = SimpleNamespace(loss_fn=PreferenceLoss("adadpo"), args=SimpleNamespace(ref_logps_cache_dir=None))
    report = Report()
    details = check_micro_batches(report, trainer, [], SimpleNamespace(mode="live"), world=1)
    (row,) = report.checks
    assert row.status == "FAIL" and "no micro-batch" in row.value and "dataset_name" in row.fix
    assert report.exit_code() == 1 and json.loads(json.dumps(details, allow_nan=False)) == {"step0_loss": None}
