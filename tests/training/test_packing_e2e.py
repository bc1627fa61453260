"""Packed (`padding_free: true`) training end to end through `scripts/run_adadpo.py`'s real `main`, on CPU.

Each packed run is checked against a padded run of the same model, data and seed: same batches, so the logged loss,
gradient norm and log-probs agree to float round-off, for the policy, the live reference forward and the reference
precompute. A spy on `sequence_logps` proves the packed path (not a silent fallback to padding) did the forwards.
"""

import json
import math
import shutil
from unittest import mock

import pytest
import torch
from transformers import AutoModelForCausalLM

from adadpo.training.collators import DataCollatorForPackedPreference
from adadpo.training.logps import sequence_logps
from adadpo.training.packing import is_packed_batch
from tests.helpers.runs import tiny_run_args


COMPARED_METRICS = ("loss", "grad_norm", "logps/chosen", "logps/rejected", "lengths/chosen", "num_tokens")
TOL = {"rel": 1e-5, "abs": 1e-5}


def _train(run_adadpo, argv):
    """Run `main`, recording for every `sequence_logps` call whether its batch was packed."""
    packed_calls = []

    def spy(model, batch, **kwargs):
        packed_calls.append(is_packed_batch(batch))
        return sequence_logps(model, batch, **kwargs)

    with mock.patch("adadpo.training.trainer.sequence_logps", side_effect=spy):
        trainer = run_adadpo.main(*run_adadpo.parse_args(argv), argv=argv)
    return trainer, packed_calls


def _step_logs(trainer):
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def _assert_same_logs(packed, padded):
    assert len(packed) == len(padded) > 0
    for step_packed, step_padded in zip(packed, padded):
        for key in COMPARED_METRICS:
            assert step_packed[key] == pytest.approx(step_padded[key], **TOL), (step_packed["step"], key)


@pytest.mark.parametrize(
    ("loss_type", "max_tokens_per_batch"),
    [("adadpo", None), ("simpo", None), ("adadpo", 64)],
    ids=["adadpo", "simpo", "adadpo-token-budget"],
)
def test_packed_run_trains_saves_and_matches_padded_run(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, loss_type, max_tokens_per_batch
):
    common = {
        "loss_type": loss_type,
        "attn_implementation": "sdpa",
        "max_steps": 2,
        "save_steps": 2,
        "test_split_size": 0.25,  # 8 eval pairs in batches of 3, 3, 2: evaluation goes through packing too
        "per_device_eval_batch_size": 3,
    }
    out = tmp_path / "packed"
    packed, packed_calls = _train(
        run_adadpo,
        tiny_run_args(
            tiny_model_dir, pref_jsonl, out, padding_free=True, max_tokens_per_batch=max_tokens_per_batch, **common
        ),
    )
    padded, padded_calls = _train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "pad", **common))

    assert isinstance(packed.data_collator, DataCollatorForPackedPreference)
    assert packed.data_collator.max_tokens_per_batch == max_tokens_per_batch
    # adadpo: a policy and a reference forward per step (2 train, 3 eval); simpo: the policy only. All packed.
    assert len(packed_calls) == (10 if loss_type == "adadpo" else 5) and all(packed_calls)
    assert len(padded_calls) == len(packed_calls) and not any(padded_calls)
    packed_logs = _step_logs(packed)
    assert all(math.isfinite(entry["loss"]) for entry in packed_logs)
    # Step 1 (same initial weights, same batch) and step 2 (after one identical optimizer update).
    _assert_same_logs(packed_logs, _step_logs(padded))

    packed_results, padded_results = (
        json.loads((path / "all_results.json").read_text()) for path in (out, tmp_path / "pad")
    )
    for key in ("eval_loss", "eval_rewards/margins", "eval_logps/chosen", "eval_logps/rejected"):
        assert packed_results[key] == pytest.approx(padded_results[key], **TOL), key

    assert (out / "checkpoint-2" / "model.safetensors").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(out).state_dict()
    for name, live in packed.accelerator.unwrap_model(packed.model).state_dict().items():
        torch.testing.assert_close(reloaded[name], live, msg=name)
    assert "padding_free: true" in (out / "adadpo_config.yaml").read_text()


def test_packed_reference_precompute_matches_padded_precompute(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    # One data copy per run: TRL caches precomputed log-probs by dataset fingerprint, which would let the second
    # run read the first run's numbers instead of computing its own.
    runs = {}
    for padding_free in (True, False):
        data = shutil.copy(pref_jsonl, tmp_path / f"prefs-{padding_free}.jsonl")
        argv = tiny_run_args(
            tiny_model_dir,
            data,
            tmp_path / f"out-{padding_free}",
            loss_type="adadpo",
            attn_implementation="sdpa",
            precompute_ref_log_probs=True,
            padding_free=padding_free,
            max_steps=1,
            save_steps=1,
        )
        runs[padding_free] = _train(run_adadpo, argv)
    (packed, packed_calls), (padded, padded_calls) = runs[True], runs[False]

    num_pairs = len(packed.train_dataset)
    # Precompute: one packed forward per 2 pairs over the whole set; training: the policy only (refs are in the batch)
    assert len(packed_calls) == num_pairs // 2 + 1 and all(packed_calls) and not any(padded_calls)
    for column in ("ref_chosen_logps", "ref_rejected_logps"):
        torch.testing.assert_close(
            torch.tensor(packed.train_dataset[column]),
            torch.tensor(padded.train_dataset[column]),
            rtol=1e-5,
            atol=1e-5,
        )
    _assert_same_logs(_step_logs(packed), _step_logs(padded))
    assert (tmp_path / "out-True" / "checkpoint-1" / "model.safetensors").exists()


def test_unsupported_attention_with_packing_is_refused_before_any_output(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path
):
    out = tmp_path / "out"
    argv = tiny_run_args(
        tiny_model_dir, pref_jsonl, out, padding_free=True, attn_implementation="paged|eager", max_steps=1
    )
    with pytest.raises(ValueError, match=r"attn_implementation='paged\|eager'") as error:
        _train(run_adadpo, argv)
    message = str(error.value)
    assert "attend across the packed sequences" in message and "sdpa" in message and "padding_free: false" in message
    written = sorted(path.name for path in out.rglob("*")) if out.exists() else []
    assert not any(name.startswith("checkpoint") or name.endswith(".safetensors") for name in written), written


def test_packed_lora_with_gradient_checkpointing_trains(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    out = tmp_path / "lora"
    argv = tiny_run_args(
        tiny_model_dir,
        pref_jsonl,
        out,
        loss_type="adadpo",
        attn_implementation="sdpa",
        padding_free=True,
        gradient_checkpointing=True,
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        max_steps=2,
        save_steps=2,
    ) + ["--lora_target_modules", "q_proj", "v_proj"]
    trainer, packed_calls = _train(run_adadpo, argv)

    model = trainer.accelerator.unwrap_model(trainer.model)
    assert model.is_gradient_checkpointing and len(packed_calls) == 4 and all(packed_calls)
    logs = _step_logs(trainer)
    assert len(logs) == 2 and all(math.isfinite(entry["loss"]) and entry["grad_norm"] > 0 for entry in logs)
    # The reference is the adapter-free base: equal to the policy at step 1 (LoRA B starts at zero), so the loss is
    # log 2 and the rewards are 0; at step 2 the adapters have moved the policy away from it.
    assert logs[0]["loss"] == pytest.approx(math.log(2), abs=1e-6) and logs[0]["rewards/chosen"] == 0
    assert logs[1]["rewards/chosen"] != 0
    lora_b = {name: p for name, p in model.named_parameters() if "lora_B" in name}
    assert {name.split(".lora_B")[0].rsplit(".", 1)[-1] for name in lora_b} == {"q_proj", "v_proj"}
    assert any(p.detach().abs().sum() > 0 for p in lora_b.values())  # the adapters trained
    assert (out / "adapter_model.safetensors").exists() and (
        out / "checkpoint-2" / "adapter_model.safetensors"
    ).exists()
