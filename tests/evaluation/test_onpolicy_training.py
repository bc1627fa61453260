"""On-policy pairs written by `generate_preferences.py` train through `run_adadpo.py` (issue: on-policy data)."""

import math

import pytest

from adadpo.cli import generate_preferences
from tests.evaluation.test_generate_evaluate import gen_argv, prompt_file  # noqa: F401  (prompt_file is a fixture)
from tests.helpers.runs import tiny_run_args


@pytest.fixture(scope="module")
def prompts(prompt_file):  # noqa: F811
    return prompt_file


@pytest.mark.parametrize("loss_type", ["adadpo", "madpo"])  # madpo reads the generated `reward_margin` column
def test_generated_pairs_train(tiny_model_dir, prompts, run_adadpo, tmp_path, loss_type):
    prefs = tmp_path / "prefs.jsonl"
    summary = generate_preferences.main(gen_argv(str(tiny_model_dir), prompts, prefs))
    assert summary["num_pairs"] >= 2
    argv = tiny_run_args(
        tiny_model_dir, prefs, tmp_path / "out", loss_type=loss_type, max_steps=2, per_device_train_batch_size=1
    )
    trainer = run_adadpo.main(*run_adadpo.parse_args(argv), argv=argv)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert len(trainer.train_dataset) == summary["num_pairs"]
