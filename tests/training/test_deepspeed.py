"""DeepSpeed ZeRO-2/3 with two CPU processes (gloo), proven equal to one process.

Every run goes through `scripts/run_adadpo.py`'s `main` (launched through `tests/distributed_harness.py`, which also
reports what each rank saw). fp32 throughout, so the only differences from one process are summation order
(per-rank partial sums, the all-reduce): hence 1e-4 relative between engines, and 1e-5 between two runs of the same
engine (resume). The first DeepSpeed run on a machine JIT-compiles DeepSpeed's CPU communication op (about a
minute, then cached).
"""

import math
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from adadpo.training.ref_cache import ReferenceLogpsCache
from tests.helpers.distributed_harness import (
    assert_logs_close,
    assert_weights_close,
    deepspeed_launch_config,
    launch,
    read_reports,
    run_and_report,
)
from tests.helpers.runs import step_logs, tiny_run_args


pytestmark = pytest.mark.slow
LN2 = math.log(2.0)


def args(model_dir, data, out, **overrides):
    common = {"max_steps": 4, "save_steps": 2, "global_batch_size": 4, "seed": 0, "test_split_size": 4}
    return tiny_run_args(model_dir, data, out, **{**common, **overrides})


# ---- ZeRO-3, AdaDPO, reference in its own ZeRO-3 engine: equals one process; kill and resume ----------------------


@pytest.fixture(scope="module")
def zero3_runs(tiny_model_dir, pref_jsonl, tmp_path_factory):
    """One uninterrupted 2-process ZeRO-3 run (checkpoints 2 and 4) and its 1-process twin (same global batch)."""
    tmp = tmp_path_factory.mktemp("zero3")
    launch(
        deepspeed_launch_config(tmp, 3),
        args(tiny_model_dir, pref_jsonl, tmp / "zero3", per_device_train_batch_size=2),
        tmp,
    )
    _, one = run_and_report(args(tiny_model_dir, pref_jsonl, tmp / "one", per_device_train_batch_size=4))
    return tmp, read_reports(tmp / "zero3", 2), one


def test_zero3_two_processes_equal_one_process(zero3_runs):
    tmp, (rank0, rank1), one = zero3_runs
    assert rank0["zero_stage"] == rank1["zero_stage"] == 3
    assert rank0["reference"] == "DeepSpeedEngine"  # TRL's prepare_deepspeed: the reference is its own engine
    for report in (rank0, rank1):  # every tensor of policy and reference is split over the two ranks
        assert all(report["policy_partitioned"].values()) and all(report["reference_partitioned"].values())
    logs = step_logs(rank0)
    assert [e["step"] for e in logs] == [1, 2, 3, 4] and all(e["batch/pairs"] == 4.0 for e in logs)
    assert logs[0]["loss"] == pytest.approx(LN2, abs=1e-6)  # step 1: the policy is the reference
    assert_logs_close(logs, step_logs(one), rel=1e-4)
    assert_weights_close(tmp / "zero3", tmp / "one", rtol=1e-4)
    assert rank0["eval_prompts_sha"] == rank1["eval_prompts_sha"] == one["eval_prompts_sha"]
    checkpoint = tmp / "zero3" / "checkpoint-4"
    assert (checkpoint / "model.safetensors").exists() and (checkpoint / "global_step4").is_dir()
    assert not (tmp / "zero3" / ".checkpoint-staging").exists()


def test_zero3_sigterm_checkpoints_and_the_same_command_resumes_as_if_uninterrupted(
    zero3_runs, tiny_model_dir, pref_jsonl, tmp_path
):
    """SIGTERM to the launcher after step 1 (forwarded to both processes): both finish the step they are in, write
    that step's ZeRO-3 checkpoint (every rank its shard) and stop; the same command resumes from it. (A hard kill
    after a checkpoint is tested in one process: test_reliability_faults.py.)"""
    zero3_dir, reports, _ = zero3_runs
    config = deepspeed_launch_config(tmp_path, 3)
    argv = args(tiny_model_dir, pref_jsonl, tmp_path / "killed", per_device_train_batch_size=2, save_steps=100)
    stopped = launch(config, argv, tmp_path, sigterm_at_step=1, check=False)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stdout[-2000:] + stopped.stderr[-4000:]
    checkpoints = sorted((tmp_path / "killed").glob("checkpoint-*"))
    assert [c.name for c in checkpoints] in (["checkpoint-1"], ["checkpoint-2"])
    assert len(list(checkpoints[0].glob("global_step*/*optim_states.pt"))) == 2  # one ZeRO shard per rank

    launch(config, argv, tmp_path)  # the same command again: resumes from that checkpoint
    resumed = read_reports(tmp_path / "killed", 2)[0]
    assert_logs_close(step_logs(resumed), step_logs(reports[0]), rel=1e-5)
    assert_weights_close(tmp_path / "killed", zero3_dir / "zero3", rtol=1e-5)


# ---- ZeRO-2, SimPO (reference-free) --------------------------------------------------------------------------------


def test_zero2_simpo_two_processes_equal_one_process(tiny_model_dir, pref_jsonl, tmp_path):
    common = {"loss_type": "simpo", "max_steps": 3, "save_steps": 3}
    argv = args(tiny_model_dir, pref_jsonl, tmp_path / "zero2", per_device_train_batch_size=2, **common)
    launch(deepspeed_launch_config(tmp_path, 2), argv, tmp_path)
    rank0, rank1 = read_reports(tmp_path / "zero2", 2)
    _, one = run_and_report(
        args(tiny_model_dir, pref_jsonl, tmp_path / "one", per_device_train_batch_size=4, **common)
    )
    assert rank0["zero_stage"] == 2 and rank0["reference"] == "NoneType"  # no reference model at all
    assert_logs_close(step_logs(rank0), step_logs(one), rel=1e-4)
    assert_weights_close(tmp_path / "zero2", tmp_path / "one", rtol=1e-4)


# ---- ZeRO-3 and the reference log-prob cache -----------------------------------------------------------------------


def _cache_entries(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir() if p.is_dir()}


def test_zero3_reference_cache_is_shared_with_one_process_and_keyed_on_the_weights(
    tiny_model_dir, pref_jsonl, tmp_path
):
    """The cache key hashes the reference weights under ZeRO-3 too, where each rank holds only shards: the key equals
    the one-process key (so either run reads the other's entry), and other weights at the same path miss."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = deepspeed_launch_config(tmp_path, 3)
    common = {"max_steps": 1, "save_strategy": "no", "precompute_ref_log_probs": True, "test_split_size": None}

    def zero3(out: str, cache: Path) -> list[dict]:
        launch(config, args(model, pref_jsonl, tmp_path / out, ref_logps_cache_dir=cache, **common), tmp_path)
        return read_reports(tmp_path / out, 2)

    zero3_cache, one_cache = tmp_path / "cache_zero3", tmp_path / "cache_one"
    written = zero3("a", zero3_cache)
    assert [r["ref_cache"]["train"]["hit"] for r in written] == [False, False]
    _, one = run_and_report(
        args(
            model, pref_jsonl, tmp_path / "one", ref_logps_cache_dir=one_cache, per_device_train_batch_size=4, **common
        )
    )
    key = one["ref_cache"]["train"]["key"]
    assert (
        _cache_entries(zero3_cache) == _cache_entries(one_cache) == {key} == {written[0]["ref_cache"]["train"]["key"]}
    )
    np.testing.assert_allclose(written[0]["ref_chosen_logps"], one["ref_chosen_logps"], rtol=1e-5)
    np.testing.assert_allclose(written[0]["ref_rejected_logps"], one["ref_rejected_logps"], rtol=1e-5)
    from_zero3 = ReferenceLogpsCache(str(zero3_cache)).load(key, "train", len(one["ref_chosen_logps"]))
    assert from_zero3 is not None  # the one-process run reads the ZeRO-3 entry

    read = zero3("b", one_cache)  # and ZeRO-3 reads the one-process entry
    assert [r["ref_cache"]["train"] for r in read] == [{"key": key, "hit": True}] * 2
    assert read[0]["ref_chosen_logps"] == one["ref_chosen_logps"]

    weights = load_file(model / "model.safetensors")  # another reference saved at the same path
    weights["model.layers.1.mlp.down_proj.weight"] += 0.05
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    changed = zero3("c", one_cache)
    assert [r["ref_cache"]["train"]["hit"] for r in changed] == [False, False]
    assert changed[0]["ref_cache"]["train"]["key"] != key and len(_cache_entries(one_cache)) == 2
    assert not np.allclose(changed[0]["ref_chosen_logps"], one["ref_chosen_logps"], rtol=1e-5)


# ---- ZeRO-2: an out-of-memory forward on one process ---------------------------------------------------------------


def test_zero2_out_of_memory_on_one_process_splits_on_both_and_equals_one_process(
    tiny_model_dir, pref_jsonl, tmp_path
):
    """Process 0's forward fails above 100 tokens: both processes split (the parts but the last backpropagated
    without an accumulation boundary, so DeepSpeed steps once), equal to one process with no error (1e-4)."""
    common = {"loss_type": "simpo", "max_steps": 3, "global_batch_size": 8, "save_steps": 3, "seed": 5}
    argv = args(tiny_model_dir, pref_jsonl, tmp_path / "two", per_device_train_batch_size=2, **common)
    launch(deepspeed_launch_config(tmp_path, 2), argv, tmp_path, oom_above_tokens=(100, 0))
    rank0, rank1 = read_reports(tmp_path / "two", 2)
    assert rank0["zero_stage"] == 2 and rank0["oom_splits"] == rank1["oom_splits"] >= 1
    _, one = run_and_report(
        args(tiny_model_dir, pref_jsonl, tmp_path / "one", per_device_train_batch_size=8, **common)
    )
    assert_logs_close(step_logs(rank0), step_logs(one), rel=1e-4)
    assert_weights_close(tmp_path / "two", tmp_path / "one", rtol=1e-4)
