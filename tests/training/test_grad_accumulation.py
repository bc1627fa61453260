"""Gradient accumulation and bf16, one process, through `scripts/run_adadpo.py`'s `main`.

- per_device_train_batch_size 2 x gradient_accumulation_steps 2 trains exactly like 4 x 1: the same 4 pairs per
  optimizer step, each micro-batch's mean loss scaled by 1/2. Weights after 2 steps agree to float round-off and the
  logged metrics, summarised over all pairs of the optimizer step (medians and extremes too), are the same.
- alpha-DPO's running margin statistics update once per micro-batch (as in the official code), so for `alpha_dpo`
  the split of the global batch is part of the method: tested here as that choice (docs/losses.md says it).
- bf16 (every GPU recipe): trains, step 1's loss is ln 2, and the losses compute in float32.
"""

import math

import pytest
import torch

from adadpo.losses import PreferenceLoss
from tests.helpers.runs import tiny_run_args, train


def step_logs(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def weights(trainer) -> dict[str, torch.Tensor]:
    return trainer.accelerator.unwrap_model(trainer.model).state_dict()


def accumulated_and_whole(run_adadpo, model_dir, data, tmp_path, **overrides):
    common = {"max_steps": 2, "global_batch_size": 4, "save_strategy": "no", "seed": 1, **overrides}
    accumulated = train(
        run_adadpo, tiny_run_args(model_dir, data, tmp_path / "ga2", per_device_train_batch_size=2, **common)
    )
    whole = train(
        run_adadpo, tiny_run_args(model_dir, data, tmp_path / "ga1", per_device_train_batch_size=4, **common)
    )
    assert accumulated.args.gradient_accumulation_steps == 2 and whole.args.gradient_accumulation_steps == 1
    return accumulated, whole


@pytest.mark.parametrize("logging_steps", [1, 2])
def test_batch_pairs_counts_the_pairs_of_each_optimizer_step(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, logging_steps
):
    """6 pairs, 2 per micro-batch, 4 per step: each epoch is a full step of 4 and a short last step of 2 (one
    micro-batch). `batch/pairs` is the mean over the logged steps of what they really trained on."""
    argv = tiny_run_args(
        tiny_model_dir, pref_jsonl, tmp_path / "run", max_steps=None, num_train_epochs=2, max_train_samples=6,
        global_batch_size=4, logging_steps=logging_steps, save_strategy="no",
    )  # fmt: skip
    logs = step_logs(train(run_adadpo, argv))
    assert [e["step"] for e in logs] == [1, 2, 3, 4][logging_steps - 1 :: logging_steps]
    assert [e["batch/pairs"] for e in logs] == ([4.0, 2.0, 4.0, 2.0] if logging_steps == 1 else [3.0, 3.0])


@pytest.mark.parametrize("padding_free", [False, True], ids=["padded", "packed"])
def test_two_micro_batches_of_two_equal_one_batch_of_four(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, padding_free
):
    accumulated, whole = accumulated_and_whole(
        run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, loss_type="adadpo", padding_free=padding_free,
        attn_implementation="sdpa",
    )  # fmt: skip
    for name, value in weights(whole).items():
        torch.testing.assert_close(weights(accumulated)[name], value, rtol=1e-5, atol=1e-5 * value.abs().max().item())
    logs_a, logs_w = step_logs(accumulated), step_logs(whole)
    assert [e["step"] for e in logs_a] == [e["step"] for e in logs_w] == [1, 2]
    for a, w in zip(logs_a, logs_w, strict=True):
        assert set(a) == set(w)
        assert a["batch/pairs"] == w["batch/pairs"] == 4.0
        for key in set(w) - {"step", "epoch", "learning_rate"}:
            assert a[key] == pytest.approx(w[key], rel=1e-5, abs=1e-6), (w["step"], key)
    assert logs_w[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_alpha_dpo_statistics_update_per_micro_batch(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    accumulated, whole = accumulated_and_whole(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, loss_type="alpha_dpo")
    assert accumulated.loss_fn.normalizer.num_updates == 4  # 2 optimizer steps x 2 micro-batches
    assert whole.loss_fn.normalizer.num_updates == 2
    assert accumulated.loss_fn.normalizer.mean != pytest.approx(whole.loss_fn.normalizer.mean, rel=1e-6)


def test_bf16_trains_from_ln2_and_losses_compute_in_float32(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, monkeypatch
):
    seen = []

    def recording(self, **kwargs):
        out = original(self, **kwargs)
        seen.append(
            {
                "policy_logps": kwargs["policy_chosen_logps"].dtype,
                "losses": out.losses.dtype,
                **{key: out.metrics[key].dtype for key in ("beta_w", "token_grad_balance", "grad_balance")},
            }
        )
        return out

    original = PreferenceLoss.__call__
    monkeypatch.setattr(PreferenceLoss, "__call__", recording)
    trainer = train(
        run_adadpo,
        tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "bf16", bf16=True, max_steps=2, save_strategy="no"),
    )
    assert trainer.args.bf16 and trainer.accelerator.mixed_precision == "bf16"
    logs = step_logs(trainer)
    assert logs[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference, whatever the precision
    assert logs[0]["adadpo/beta_w_mean"] == pytest.approx(trainer.args.beta, rel=1e-6)
    assert logs[1]["loss"] != logs[0]["loss"]  # it trained
    assert len(seen) == 2 and all(set(dtypes.values()) == {torch.float32} for dtypes in seen), seen
