"""Reference log-prob cache: written once, hit without any reference forward, missed when settings change,
recomputed when corrupt, and equal to freshly computed log-probs."""

import numpy as np
import pytest
from conftest import tiny_run_args

from adadpo.trainer import AdaDPOTrainer


def _run(run_adadpo, model_dir, data, out, cache, **overrides):
    overrides = {"ref_logps_cache_dir": None if cache is None else str(cache), **overrides}
    argv = tiny_run_args(
        model_dir,
        data,
        out,
        loss_type="adadpo",
        max_steps=1,
        save_strategy="no",
        precompute_ref_log_probs=True,
        **overrides,
    )
    return run_adadpo.main(*run_adadpo.parse_args(argv), argv=argv)


def _entries(cache):
    return sorted(p.name for p in cache.iterdir() if p.is_dir())


@pytest.fixture
def counted(monkeypatch, model_loads):
    """Reference forwards, and every model load (`model_loads`: the policy's and any reference's)."""
    calls = {"ref": 0, "loads": model_loads}
    original_ref = AdaDPOTrainer.compute_ref_log_probs

    def ref(self, *args, **kwargs):
        calls["ref"] += 1
        return original_ref(self, *args, **kwargs)

    monkeypatch.setattr(AdaDPOTrainer, "compute_ref_log_probs", ref)
    return calls


def test_cache_written_then_hit_without_reference_forward(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, counted):
    cache = tmp_path / "cache"
    first = _run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "a", cache)
    assert counted["ref"] > 0 and first.ref_cache.last_hit is False
    assert len(_entries(cache)) == 1 and first.ref_model is None
    counted["ref"] = 0
    counted["loads"].clear()
    second = _run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "b", cache)
    assert second.ref_cache.last_hit is True
    assert counted["ref"] == 0 and counted["loads"] == [
        "LlamaForCausalLM"
    ]  # the policy only: no reference load or forward
    np.testing.assert_array_equal(first.train_dataset["ref_chosen_logps"], second.train_dataset["ref_chosen_logps"])


@pytest.mark.parametrize(
    "change",
    [
        {"max_length": 48},
        {"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"},
        {"padding_free": True},  # packed sequences: the same log-probs only up to float error, so a new entry
    ],
)
def test_changed_settings_miss(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, change):
    cache = tmp_path / "cache"
    _run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "a", cache)
    trainer = _run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "b", cache, **change)
    assert trainer.ref_cache.last_hit is False and len(_entries(cache)) == 2


def test_truncated_cache_is_detected_and_recomputed(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, counted):
    cache = tmp_path / "cache"
    first = _run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "a", cache)
    data_file = cache / _entries(cache)[0] / "train.npz"
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    counted.update(ref=0)
    second = _run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "b", cache)
    assert second.ref_cache.last_hit is False and counted["ref"] > 0
    np.testing.assert_allclose(first.train_dataset["ref_chosen_logps"], second.train_dataset["ref_chosen_logps"])
    assert np.load(data_file)["ref_chosen_logps"].shape == (len(second.train_dataset),)


def test_cached_logps_equal_fresh_reference_forward(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    cached = _run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "a", tmp_path / "cache")
    fresh = _run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "b", None)  # TRL's own precompute path
    np.testing.assert_allclose(
        cached.train_dataset["ref_chosen_logps"], fresh.train_dataset["ref_chosen_logps"], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        cached.train_dataset["ref_rejected_logps"], fresh.train_dataset["ref_rejected_logps"], rtol=1e-5, atol=1e-5
    )
