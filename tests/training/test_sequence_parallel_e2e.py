"""Sequence parallelism end to end: `scripts/run_adadpo.py` under `accelerate launch` with DeepSpeed and
`parallelism_config_sp_size: 2` on two CPU processes (gloo), against the same recipe in one process.

Flash-attention's varlen path runs on CPU through the reference kernel (tests/helpers/flash_reference.py) in both.
One pair per micro-batch and a global batch of 2 pairs: the SP run's data-parallel size is 1, so its optimizer steps
see the pairs the one-process run sees, in the same order. Every logged number and the weights after the run must
agree to 1e-4 (fp32; the sums are split over the ranks); a run killed after its first checkpoint and resumed must
equal the uninterrupted one; a reference precomputed by the one-process run is found in the shared cache by the SP
run (same key). What cannot run here: flash-attention's CUDA kernels and NCCL's all-gather of unequal rows (on CPU
every training row is padded to 2 x max_length for gloo).
"""

import json
import math

import pytest

from tests.helpers.distributed_harness import (
    assert_every_logged_number_close,
    assert_weights_close,
    deepspeed_launch_config,
    launch,
    read_reports,
    run_and_report,
)
from tests.helpers.runs import step_logs, tiny_run_args


pytestmark = pytest.mark.slow
LN2 = math.log(2.0)


def sp_args(model_dir, data, out, **overrides):
    common = {
        "max_steps": 4,
        "save_steps": 2,
        "global_batch_size": 2,
        "per_device_train_batch_size": 1,
        "padding_free": True,
        "attn_implementation": "flash_attention_2",
        "test_split_size": 4,
        "dataloader_drop_last": True,
        "seed": 0,
    }
    return tiny_run_args(model_dir, data, out, **{**common, **overrides})


# Two epochs of 12 pairs, 3 per optimizer step (4 steps an epoch): the second epoch restarts DeepSpeed's adapter with
# its own shuffle; the checkpoint after step 5 (one step into epoch 2, 3 slices: inside a gathered batch of the
# adapter) is where the resume test kills the run
ADADPO = {"loss_type": "adadpo", "global_batch_size": 3, "max_steps": -1, "num_train_epochs": 2,
          "max_train_samples": 12, "save_steps": 5}  # fmt: skip


def launched(tmp, stage, argv, **kwargs):
    return launch(deepspeed_launch_config(tmp, stage, sp_size=2), argv, tmp, emulate_flash=True, **kwargs)


@pytest.fixture(scope="module")
def adadpo_runs(tiny_model_dir, pref_jsonl, tmp_path_factory):
    """AdaDPO, ZeRO-2, SP=2 (a checkpoint every step) and its one-process twin."""
    tmp = tmp_path_factory.mktemp("sp_adadpo")
    launched(tmp, 2, sp_args(tiny_model_dir, pref_jsonl, tmp / "sp", **ADADPO))
    with pytest.MonkeyPatch.context() as mp:
        from tests.helpers.flash_reference import emulate_flash

        emulate_flash(mp)
        _, one = run_and_report(sp_args(tiny_model_dir, pref_jsonl, tmp / "one", **ADADPO))
    return tmp, read_reports(tmp / "sp", 2), one


def test_adadpo_with_sequence_parallelism_equals_one_process_over_two_epochs(adadpo_runs):
    tmp, (rank0, rank1), one = adadpo_runs
    logs = step_logs(rank0)
    assert [e["step"] for e in logs] == list(range(1, 9)) and all(e["batch/pairs"] == 3.0 for e in logs)
    assert logs[0]["loss"] == pytest.approx(LN2, abs=1e-6)  # step 1: the policy is the reference
    assert step_logs(rank1) == logs  # both ranks computed the same whole-sequence loss
    assert_every_logged_number_close(rank0["log_history"], one["log_history"], rel=1e-4)
    assert_weights_close(tmp / "sp", tmp / "one", rtol=1e-4)


def test_a_killed_sequence_parallel_run_resumes_in_its_second_epoch_as_if_uninterrupted(
    adadpo_runs, tiny_model_dir, pref_jsonl, tmp_path
):
    uninterrupted, _, _ = adadpo_runs
    argv = sp_args(tiny_model_dir, pref_jsonl, tmp_path / "killed", **ADADPO)
    killed = launched(tmp_path, 2, argv, kill_after_save=5, check=False)
    assert killed.returncode != 0 and (tmp_path / "killed" / "checkpoint-5").is_dir()
    launched(tmp_path, 2, argv)  # the same command: resumes from checkpoint-5, epoch 2, 3 slices in
    rank0, _ = read_reports(tmp_path / "killed", 2)
    resumed = [e for e in step_logs(rank0) if e["step"] > 5]
    expected = [e for e in step_logs(read_reports(uninterrupted / "sp", 2)[0]) if e["step"] > 5]
    assert [e["step"] for e in resumed] == [6, 7, 8]
    assert_every_logged_number_close(resumed, expected, rel=1e-5)
    assert_weights_close(tmp_path / "killed", uninterrupted / "sp", rtol=1e-5)


# (loss, ZeRO stage, processes, pairs per optimizer step): SimPO runs 4 processes, two SP groups of 2 with 2
# accumulation steps each, against one process accumulating 4 pairs
@pytest.mark.parametrize("loss_type, stage, processes, pairs", [("dpo", 3, 2, 2), ("simpo", 2, 4, 4)])
def test_more_losses_and_zero3_with_sequence_parallelism_equal_one_process(
    loss_type, stage, processes, pairs, tiny_model_dir, pref_jsonl, tmp_path
):
    """DPO with its reference log-probs precomputed once into the shared cache by the one-process run and found there
    by the SP run (ZeRO-3: each share's gradient scaled as DeepSpeed's reduction needs); SimPO, reference-free, with
    two SP groups (`parallelism_config_dp_replicate_size: 2`): per-pair metrics counted once per group."""
    cache = (
        {"precompute_ref_log_probs": True, "ref_logps_cache_dir": str(tmp_path / "cache")}
        if loss_type == "dpo"
        else {}
    )
    run = {"loss_type": loss_type, "global_batch_size": pairs, **cache}
    with pytest.MonkeyPatch.context() as mp:
        from tests.helpers.flash_reference import emulate_flash

        emulate_flash(mp)
        _, one = run_and_report(sp_args(tiny_model_dir, pref_jsonl, tmp_path / "one", **run))
    sp_launch = deepspeed_launch_config(tmp_path, stage, num_processes=processes, sp_size=2)
    launch(sp_launch, sp_args(tiny_model_dir, pref_jsonl, tmp_path / "sp", **run), tmp_path, emulate_flash=True)
    rank0, *_ = read_reports(tmp_path / "sp", processes)
    assert rank0["zero_stage"] == stage and rank0["world_size"] == processes
    assert all(e["batch/pairs"] == pairs for e in step_logs(rank0))
    if cache:  # computed by the one-process run, found by the SP run under the same key
        assert one["ref_cache"].keys() == rank0["ref_cache"].keys() == {"train", "eval"}
        for split, lookup in one["ref_cache"].items():
            assert not lookup["hit"] and rank0["ref_cache"][split] == {"key": lookup["key"], "hit": True}
    assert_every_logged_number_close(rank0["log_history"], one["log_history"], rel=1e-4)
    assert_weights_close(tmp_path / "sp", tmp_path / "one", rtol=1e-4)


def test_preflight_runs_its_checks_under_sequence_parallelism(tiny_model_dir, pref_jsonl, tmp_path):
    """scripts/preflight.py under the same launch: the step-0 identity and the packing check run on this rank's slice
    with the loss completed over the group, the worst-batch steps through DeepSpeed's adapter; all pass."""
    argv = sp_args(tiny_model_dir, pref_jsonl, tmp_path / "out", loss_type="adadpo", max_steps=None, save_steps=None,
                   save_strategy=None, global_batch_size=2)  # fmt: skip
    result = launch(deepspeed_launch_config(tmp_path, 2, sp_size=2),
                    [*argv, "--report", str(tmp_path / "r.json"), "--sample_rows=16"], tmp_path, emulate_flash=True,
                    preflight=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    rows = {c["name"]: c for c in json.loads((tmp_path / "r.json").read_text())["checks"]}
    assert {name for name, row in rows.items() if row["status"] == "FAIL"} == set()
    assert rows["processes x per-device batch x accumulation"]["value"].startswith("1 x 1 x 2 = 2 (SP groups of 2)")
    assert rows["adadpo loss == closed form"]["status"] == "PASS"
    assert rows["packed (flash_attention_2) == padded (sdpa)"]["status"] == "PASS"
    assert rows["sequence-parallel slices (2 ranks) == whole row"]["status"] == "PASS"
    assert rows["negative control (positions not restarted) differs"]["status"] == "PASS"
    assert not (tmp_path / "out").exists()
