"""Every field of TRL's DPOConfig (with transformers' TrainingArguments), ModelConfig and ScriptArguments takes effect
or is refused (adadpo.upstream_options): the table covers them all, each refusal stops `scripts/run_adadpo.py` before
its output folder exists, and prints the message alone. The options our code applies are tested where they act
(tests/training/test_trl_options.py, tests/losses/test_losses_trl_types.py)."""

import dataclasses
import subprocess
import sys

import pytest
import trl
from accelerate.parallelism_config import ParallelismConfig

from adadpo.config import AdaDPOConfig
from adadpo.upstream_options import REFUSED, UPSTREAM_OPTIONS, markdown_table
from tests.helpers.runs import REPO_ROOT, harness_env, tiny_run_args, train


def test_every_upstream_field_is_classified():
    fields = {f.name for cls in (trl.DPOConfig, trl.ModelConfig, trl.ScriptArguments) for f in dataclasses.fields(cls)}
    assert sorted(fields - set(UPSTREAM_OPTIONS)) == [], "classify the new fields in adadpo/upstream_options.py"
    assert sorted(set(UPSTREAM_OPTIONS) - fields) == [], "fields gone upstream: drop them from the table"


def test_the_docs_table_is_the_code_table():
    assert (REPO_ROOT / "docs" / "upstream_options.md").read_text() == markdown_table(), (
        "regenerate: python -m adadpo.upstream_options > docs/upstream_options.md"
    )


# A value other than the default for every refused option (command-line text), and one for each conflict.
REFUSED_VALUES = {
    "label_smoothing_factor": "0.1",
    "use_cache": "true",
    "auto_find_batch_size": "true",
    "include_for_metrics": "inputs",
    "batch_eval_metrics": "true",
    "hub_always_push": "true",
    "label_names": "labels",
    "length_column_name": "len",
    "do_predict": "true",
    "dataset_streaming": "true",
    "ignore_bias_buffers": "true",
}
CONFLICTS = {
    "wpo-reference-free": ({"loss_type": "simpo", "use_weighting": "true"}, "use_weighting"),
    "ld-reference-free": ({"loss_type": "simpo", "ld_alpha": "0.5"}, "ld_alpha"),
    "ld-out-of-range": ({"loss_type": "dpo", "ld_alpha": "1.5"}, r"`ld_alpha` must be in \[0, 1\]"),
    "ld-with-sft": ({"loss_type": "sigmoid,sft", "ld_alpha": "0.5"}, "sft"),
    "sync-with-precompute": ({"loss_type": "dpo", "sync_ref_model": "true", "precompute_ref_log_probs": "true"},
                             "sync_ref_model"),
    "alpha-coef-without-alpha": ({"loss_type": "dpo", "f_alpha_divergence_coef": "0.3"}, "f_alpha_divergence_coef"),
    "group-by-length": ({"train_sampling_strategy": "group_by_length"}, "group_by_length"),
    "unread-hyperparameter": ({"loss_type": "dpo", "simpo_gamma": "2.0"}, "`simpo_gamma: 2.0` is not read by `dpo`"),
    "exo-without-smoothing": ({"loss_type": "exo_pair"}, "label_smoothing"),
    "weights-not-matching": ({"loss_type": "sigmoid,sft", "loss_weights": "1.0"}, "loss_weights"),
    "wpo-with-aot": ({"loss_type": "aot", "use_weighting": "true"}, "`use_weighting` .* with `aot` / `aot_unpaired`"),
    "split-beside-mixture": ({"dataset_mixture": '{"datasets": [{"id": "x"}]}'}, "`dataset_name` would be ignored"),
}  # fmt: skip


def test_every_refused_option_has_a_value_to_try():
    refused = {name for name, option in UPSTREAM_OPTIONS.items() if option.status == REFUSED}
    assert refused == set(REFUSED_VALUES) | {"parallelism_config"}  # that one is an object: tested below


@pytest.mark.parametrize("name", sorted(REFUSED_VALUES))
def test_a_refused_option_stops_before_the_output_folder_exists(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, name
):
    out = tmp_path / "out"
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, out, **{name: REFUSED_VALUES[name]})
    with pytest.raises(ValueError, match=f"`{name}: .*` is not supported: .*"):
        train(run_adadpo, argv)
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(CONFLICTS))
def test_a_conflicting_combination_stops_before_the_output_folder_exists(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, case
):
    overrides, pattern = CONFLICTS[case]
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=pattern):
        train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, out, **overrides))
    assert not out.exists()


def test_parallelism_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="(?s)parallelism_config.*not supported"):
        AdaDPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none",
                     parallelism_config=ParallelismConfig(sp_size=2, sp_backend="deepspeed"))  # fmt: skip


def test_the_script_prints_a_refusal_alone_and_exits_2(tiny_model_dir, pref_jsonl, tmp_path):
    out = tmp_path / "out"
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, out, label_smoothing_factor=0.1)
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "run_adadpo.py"), *argv],
                            env=harness_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: This configuration cannot run as asked" in result.stderr and "label_smoothing" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
