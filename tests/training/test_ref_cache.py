"""Reference log-prob cache: written once, hit without any reference forward, missed when settings change,
recomputed when corrupt, and equal to freshly computed log-probs."""

import numpy as np
import pytest
import torch

from adadpo.training.ref_cache import weights_fingerprint
from adadpo.training.trainer import AdaDPOTrainer
from tests.helpers.runs import tiny_run_args


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


# ---- Sharded weights: the key sees the real values, and equals the one-process key ---------------------------------


def _tiny_model_with_uneven_rows():
    from adadpo.testing import build_tiny_model, build_tiny_tokenizer

    model = build_tiny_model(build_tiny_tokenizer())
    torch.manual_seed(1)
    model.uneven = torch.nn.Linear(3, 5)  # 5 rows over 2 ranks: shards of 3 and 2 rows
    return model


def _fsdp2_fingerprint(rank: int, init_file: str, results) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    model = _tiny_model_with_uneven_rows()
    mesh = init_device_mesh("cpu", (2,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)  # every parameter becomes a DTensor sharded on dim 0

    def reduce_sum(tensor):
        dist.all_reduce(tensor)
        return tensor

    kinds = {type(p).__name__ for p in model.parameters()}
    results.put((rank, weights_fingerprint(model, reduce_sum=reduce_sum), sorted(kinds)))
    dist.destroy_process_group()


def test_fingerprint_of_fsdp2_shards_equals_the_whole_model(tmp_path):
    """FSDP2 (`fully_shard`, gloo on CPU): each rank holds a dim-0 shard of every tensor; the fingerprint each rank
    computes equals the whole model's, so the reference cache key is the same under FSDP as in one process."""
    import torch.multiprocessing as mp

    whole = weights_fingerprint(_tiny_model_with_uneven_rows())
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_fsdp2_fingerprint, args=(r, str(tmp_path / "init"), results)) for r in range(2)]
    for proc in procs:
        proc.start()
    outcomes = sorted(results.get(timeout=240) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
    assert [kinds for _, _, kinds in outcomes] == [["DTensor"]] * 2
    assert [fingerprint for _, fingerprint, _ in outcomes] == [whole, whole]


def test_fingerprint_changes_with_a_sampled_value():
    model = _tiny_model_with_uneven_rows()
    before = weights_fingerprint(model)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 0.01  # position 0 is always sampled
    assert weights_fingerprint(model) != before
