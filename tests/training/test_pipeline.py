"""End to end through `scripts/run_adadpo.py`'s real `main` on a tiny random Llama, offline, on CPU."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adadpo.files import write_jsonl_atomic
from adadpo.losses import LOSS_SPECS, LOSSES
from adadpo.run_folder import RESOLVED_CONFIG
from adadpo.training.trainer import AdaDPOTrainer
from tests.helpers.losses import required
from tests.helpers.runs import preference_rows_with_margin, tiny_run_args, train


def _step_logs(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("loss_type", LOSSES)
def test_every_loss_trains_padded_and_packed_saves_and_reloads(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, loss_type
):
    """Each loss trains once padded and once packed (`padding_free: true`) on the same batches: packing changes only
    how log-probs are computed, so every step's loss and log-probs agree to float round-off."""
    out = tmp_path / loss_type
    trainer = train(
        run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, out, loss_type=loss_type, **required(loss_type))
    )
    packed = train(
        run_adadpo,
        tiny_run_args(
            tiny_model_dir, pref_jsonl, tmp_path / f"{loss_type}-packed", loss_type=loss_type, padding_free=True,
            save_strategy="no", **required(loss_type),
        ),
    )  # fmt: skip

    losses = [entry["loss"] for entry in _step_logs(trainer)]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    if LOSS_SPECS[loss_type].needs_reference:  # step 1: the policy is its reference
        assert _step_logs(trainer)[0]["kl/beta_margin"] == 0
    assert packed.padding_free and len(_step_logs(packed)) == 3
    # alpha-DPO divides margins by their running std over 2-pair batches, which amplifies round-off ~10x
    rel = 1e-4 if LOSS_SPECS[loss_type].needs_margin_normalizer else 1e-5
    for padded_step, packed_step in zip(_step_logs(trainer), _step_logs(packed), strict=True):
        for key in ("loss", "logps/chosen", "logps/rejected", "lengths/chosen"):
            assert packed_step[key] == pytest.approx(padded_step[key], rel=rel, abs=1e-6), (packed_step["step"], key)
    assert (out / "checkpoint-3" / "model.safetensors").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    trained = trainer.accelerator.unwrap_model(trainer.model)
    for (name, saved), live in zip(reloaded.state_dict().items(), trained.state_dict().values()):
        torch.testing.assert_close(saved, live, msg=name)
    AutoTokenizer.from_pretrained(out)
    card = (out / "README.md").read_text()
    assert f"`{loss_type}`" in card and "adadpo" in card and LOSS_SPECS[loss_type].formula in card
    assert json.loads((out / "all_results.json").read_text())["train_loss"] == pytest.approx(
        trainer.state.log_history[-1]["train_loss"]
    )
    assert f"loss_type: {loss_type}" in (out / RESOLVED_CONFIG).read_text()
    logged = trainer.state.log_history[0]
    for key in (
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen_per_token",
        "adadpo/beta_w_mean",
        "adadpo/clip_fraction",
        "adadpo/token_grad_balance_median",
        "lengths/chosen",
    ):
        # sft never moves the rejected response: its balance is +inf on every pair, so no median is logged
        assert key in logged or (loss_type == "sft" and "grad_balance" in key), key
    if LOSS_SPECS[loss_type].needs_reference:
        assert "kl/beta_margin" in logged


@pytest.mark.parametrize("loss_type", [name for name in LOSSES if not LOSS_SPECS[name].needs_reference])
def test_reference_free_losses_never_create_a_reference_model(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, loss_type, model_loads
):
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "out", loss_type=loss_type, max_steps=1)
    trainer = train(run_adadpo, argv)
    assert trainer.ref_model is None
    assert model_loads == ["LlamaForCausalLM"]  # the policy only


def test_reference_based_loss_loads_its_reference(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, model_loads):
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "out", loss_type="adadpo", max_steps=1)
    trainer = train(run_adadpo, argv)
    assert trainer.ref_model is not None
    assert model_loads == ["LlamaForCausalLM"] * 2  # the policy, then TRL's reference (`create_model_from_path`)


def test_auto_resume_from_last_checkpoint(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    out = tmp_path / "out"
    train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, out, max_steps=2, save_steps=2))
    trainer = train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, out, max_steps=4, save_steps=2))
    steps = [entry["step"] for entry in trainer.state.log_history if "loss" in entry]
    assert steps == [1, 2, 3, 4] and (out / "checkpoint-4").exists()


def test_implicit_prompt_and_parquet_data(run_adadpo, tiny_model_dir, tmp_path):
    import datasets

    rows = preference_rows_with_margin(16, implicit_prompt=True)
    path = tmp_path / "hh.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    trainer = train(run_adadpo, tiny_run_args(tiny_model_dir, path, tmp_path / "out", loss_type="dpo", max_steps=1))
    assert "prompt_ids" in trainer.train_dataset.column_names


def test_eval_split_metrics_are_logged(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "out", max_steps=2, test_split_size=0.25)
    train(run_adadpo, argv)
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert math.isfinite(results["eval_loss"]) and "eval_rewards/accuracies" in results


def test_trainer_requires_adadpo_config(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(TypeError, match="AdaDPOConfig"):
        AdaDPOTrainer(model, args=None)


def test_generated_dataset_path_plain_text(run_adadpo, tiny_model_dir, tmp_path):
    from adadpo.testing import make_preference_rows

    path = write_jsonl_atomic(tmp_path / "plain.jsonl", make_preference_rows(12, conversational=False))
    trainer = train(run_adadpo, tiny_run_args(tiny_model_dir, path, tmp_path / "out", loss_type="simpo", max_steps=1))
    assert len(trainer.train_dataset) == 12
