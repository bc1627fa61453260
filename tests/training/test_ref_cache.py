"""Reference log-prob cache: written once, hit without any reference forward, missed when settings change,
recomputed when corrupt, and equal to freshly computed log-probs."""

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from adadpo.files import write_jsonl_atomic
from adadpo.testing import CHATML_TEMPLATE
from adadpo.training.ref_cache import ReferenceLogpsCache, weights_fingerprint
from adadpo.training.trainer import AdaDPOTrainer
from tests.helpers.runs import preference_rows_with_margin, tiny_run_args


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


# ---- Every entry of the key, changed alone, misses ---------------------------------------------------------------

# max_length 32 cuts most of the tiny pairs (prompts of up to 27 tokens, pairs of up to 44) and drops none, so
# `max_length` and `truncation_mode` change the log-probs (at the default 64 nothing is cut and a key without them
# would hit with the right numbers by luck).
TRUNCATING = {"max_length": 32}


def _one_weight_changed(model_dir, tmp_path):
    """The same folder (same `name_or_path`), one tensor changed in place: only the weights tell them apart."""
    path = model_dir / "model.safetensors"
    weights = load_file(path)
    weights["model.layers.1.mlp.down_proj.weight"][0, 0] += 0.5
    save_file(weights, path, metadata={"format": "pt"})
    return {}


def _same_model_elsewhere(model_dir, tmp_path):
    return {"model_name_or_path": shutil.copytree(model_dir, tmp_path / "elsewhere")}


def _other_pairs(model_dir, tmp_path):  # as many rows (a different count would miss on the row check alone)
    return {"dataset_name": write_jsonl_atomic(tmp_path / "other.jsonl", preference_rows_with_margin(32, seed=1))}


@dataclass
class KeyChange:
    entries: set  # the key entries the change moves: one wherever a run's arguments can move it alone
    change: dict | Callable  # run overrides, or (model folder, tmp_path) -> run overrides
    logps_change: bool  # whether the reference log-probs change too (a stale hit would train on wrong numbers)
    base: dict = field(default_factory=dict)  # overrides of both runs


KEY_CHANGES = {
    "weights": KeyChange({"weights"}, _one_weight_changed, True),
    "model path": KeyChange({"reference", "tokenizer"}, _same_model_elsewhere, False),  # the tokenizer is the model's
    # The entry reads `model_init_kwargs`; `model_revision` alone does not reach it (the weights entry does).
    "revision": KeyChange({"revision"}, {"model_revision": "v2", "model_init_kwargs": '{"revision": "v2"}'}, False),
    "dtype": KeyChange({"dtype", "weights"}, {"dtype": "bfloat16"}, True),  # the fingerprint hashes dtypes too
    "attn_implementation": KeyChange({"attn_implementation"}, {"attn_implementation": "eager"}, False),
    "tokens": KeyChange({"tokens"}, _other_pairs, True),
    "chat_template": KeyChange({"chat_template"}, {"chat_template": CHATML_TEMPLATE + "{# same tokens #}"}, False),
    "max_length": KeyChange({"max_length"}, {"max_length": 36}, True),
    "truncation_mode": KeyChange({"truncation_mode"}, {"truncation_mode": "keep_end"}, True),
    "ld_alpha": KeyChange({"ld_alpha"}, {"ld_alpha": 0.5}, True),
    "mixed_precision": KeyChange({"mixed_precision"}, {"bf16": True}, True),  # bf16 autocast, fp32 weights
    "collator": KeyChange({"collator"}, {"padding_free": True}, False),  # packed: equal up to float error
    "max_tokens_per_batch": KeyChange(
        {"max_tokens_per_batch"}, {"max_tokens_per_batch": 96}, False, base={"padding_free": True}
    ),
}


@pytest.fixture
def key_parts(monkeypatch) -> list[dict]:
    """What each cache lookup hashed (`ReferenceLogpsCache.key_parts`), in order."""
    recorded = []
    original = ReferenceLogpsCache.key_parts

    def recording(trainer, dataset):
        recorded.append(original(trainer, dataset))
        return recorded[-1]

    monkeypatch.setattr(ReferenceLogpsCache, "key_parts", staticmethod(recording))
    return recorded


@pytest.mark.parametrize("case", list(KEY_CHANGES))
def test_each_key_entry_changed_alone_misses(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, key_parts, case):
    """A run, then the same run with one setting changed: a new entry, never the first run's log-probs. Catches an
    entry dropped from the key (e.g. `weights`: a fine-tune saved over the same folder would reuse the old model's
    log-probs; `truncation_mode`: keep_end would train on keep_start's)."""
    spec = KEY_CHANGES[case]
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "model")  # the weights case rewrites it
    cache = tmp_path / "cache"
    first = _run(run_adadpo, model_dir, pref_jsonl, tmp_path / "a", cache, **TRUNCATING, **spec.base)
    change = spec.change(model_dir, tmp_path) if callable(spec.change) else spec.change
    second = _run(run_adadpo, model_dir, pref_jsonl, tmp_path / "b", cache, **{**TRUNCATING, **spec.base, **change})
    assert second.ref_cache.last_hit is False and len(_entries(cache)) == 2
    if spec.logps_change:  # (LD-DPO weights only the longer completion: the tiny data's rejected one)
        columns = ("ref_chosen_logps", "ref_rejected_logps")
        gap = max(np.abs(np.subtract(first.train_dataset[c], second.train_dataset[c])).max() for c in columns)
        assert gap > 1e-3
    before, after = key_parts
    assert {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)} == spec.entries


def test_every_key_entry_has_a_case(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, key_parts):
    _run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "a", tmp_path / "cache", ld_alpha=0.5, bf16=True)
    (parts,) = key_parts
    assert set(parts) == set().union(*(spec.entries for spec in KEY_CHANGES.values()))


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
