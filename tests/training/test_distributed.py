"""Plain DDP: two CPU processes (gloo) through `accelerate launch accelerate_configs/cpu_2proc.yaml`, the way users
launch on GPUs, proven equal to one process; and the train/test split, which must follow the run's seed on every
process. fp32: the only differences from one process are summation order (hence 1e-4 relative)."""

import math
import signal

import pytest

from adadpo.run_folder import RunFolder
from adadpo.training.launch_checks import check_fsdp_launch
from tests.helpers.distributed_harness import (
    assert_logs_close,
    assert_weights_close,
    fsdp_launch_config,
    launch,
    read_reports,
    run_and_report,
)
from tests.helpers.runs import REPO_ROOT, step_logs, tiny_run_args


pytestmark = pytest.mark.slow
CPU_2PROC = REPO_ROOT / "accelerate_configs" / "cpu_2proc.yaml"


DDP_COMMON = {
    "loss_type": "adadpo",
    "padding_free": True,
    "attn_implementation": "sdpa",
    "max_steps": 3,
    "global_batch_size": 4,
    "test_split_size": 4,
    "seed": 5,
}


@pytest.fixture(scope="module")
def ddp_runs(tiny_model_dir, pref_jsonl, tmp_path_factory):
    """One 2-process packed AdaDPO run (each rank packs its own 2 pairs) and its 1-process twin (4 pairs per step)."""
    tmp = tmp_path_factory.mktemp("ddp")
    launch(CPU_2PROC, tiny_run_args(tiny_model_dir, pref_jsonl, tmp / "two", per_device_train_batch_size=2,
                                    **DDP_COMMON), tmp)  # fmt: skip
    _, one = run_and_report(
        tiny_run_args(tiny_model_dir, pref_jsonl, tmp / "one", per_device_train_batch_size=4, **DDP_COMMON)
    )
    return tmp, read_reports(tmp / "two", 2), one


def test_ddp_packed_two_processes_equal_one_process(ddp_runs):
    """Losses, metrics gathered over both ranks and the final weights equal a 1-process packed run of the same 4
    pairs per step; both ranks hold out the same eval split."""
    tmp, (rank0, rank1), one = ddp_runs
    two = tmp / "two"
    logs = step_logs(rank0)
    assert [e["batch/pairs"] for e in logs] == [4.0, 4.0, 4.0]  # gathered over both ranks
    assert logs[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert_logs_close(logs, step_logs(one), rel=1e-4)
    assert_weights_close(two, tmp / "one", rtol=1e-4)
    assert rank0["eval_prompts_sha"] == rank1["eval_prompts_sha"] == one["eval_prompts_sha"]
    assert rank0["train_prompts_sha"] == rank1["train_prompts_sha"] == one["train_prompts_sha"]
    assert (two / "README.md").exists()


def test_ddp_sigterm_to_the_launcher_stops_both_processes_at_one_step_and_the_same_command_resumes(
    ddp_runs, tiny_model_dir, pref_jsonl, tmp_path
):
    """SIGTERM to `accelerate launch` (torchrun forwards it to both processes, not necessarily within the same step):
    both stop after the same optimizer step with its checkpoint; the launcher exits 128 + 15; the same command
    resumes and ends where the uninterrupted 2-process run ends (weights and logs, 1e-6)."""
    uninterrupted, (rank0, _), _ = ddp_runs
    out = tmp_path / "stopped"
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, out, per_device_train_batch_size=2, save_steps=100,
                         **DDP_COMMON)  # fmt: skip
    stopped = launch(CPU_2PROC, argv, tmp_path, sigterm_at_step=1, check=False)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stdout[-2000:] + stopped.stderr[-4000:]
    checkpoints = [p.name for p in RunFolder(out).checkpoints()]
    assert checkpoints in (["checkpoint-1"], ["checkpoint-2"]) and not RunFolder(out).is_finished()

    launch(CPU_2PROC, argv, tmp_path)  # the same command again
    resumed = read_reports(out, 2)[0]
    assert_logs_close(step_logs(resumed), step_logs(rank0), rel=1e-6)
    assert_weights_close(out, uninterrupted / "two", rtol=1e-6)


def test_an_out_of_memory_error_on_one_process_splits_that_micro_batch_on_both(tiny_model_dir, pref_jsonl, tmp_path):
    """The forward of process 0 only runs out of memory (above 100 tokens): both processes split the micro-batch (one
    all-reduce decides; were process 1 to go on alone, it would wait in the gradient all-reduce forever), and the run
    equals one process without any error (weights and every logged number, 1e-4 as between engines). Two
    accumulation steps, so that splits happen both inside DDP's `no_sync` and on the synced micro-step (a forward
    abandoned on process 1 leaves DDP's buffer-broadcast flag set differently from process 0's)."""
    common = {"loss_type": "adadpo", "max_steps": 3, "global_batch_size": 8, "optim": "sgd", "learning_rate": 0.1,
              "save_steps": 3, "seed": 5}  # fmt: skip
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "two", per_device_train_batch_size=2, **common)
    launch(CPU_2PROC, argv, tmp_path, oom_above_tokens=(100, 0))
    rank0, rank1 = read_reports(tmp_path / "two", 2)
    assert rank0["oom_splits"] == rank1["oom_splits"] >= 1  # process 1 never ran out of memory, and split too
    _, one = run_and_report(
        tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "one", per_device_train_batch_size=8, **common)
    )
    assert one["oom_splits"] == 0
    assert_logs_close(step_logs(rank0), step_logs(one), rel=1e-4)
    assert_weights_close(tmp_path / "two", tmp_path / "one", rtol=1e-4)


def test_train_test_split_follows_the_run_seed(tiny_model_dir, pref_jsonl, tmp_path):
    """`--seed` draws the held-out split (it used to be fixed at 42 whatever the seed)."""

    def split(seed: int, name: str) -> str:
        argv = tiny_run_args(
            tiny_model_dir, pref_jsonl, tmp_path / name, seed=seed, test_split_size=4, max_steps=1,
            save_strategy="no", loss_type="simpo",
        )  # fmt: skip
        trainer, report = run_and_report(argv)
        assert len(trainer.eval_dataset) == 4
        return report["eval_prompts_sha"]

    first = split(1, "a")
    assert split(2, "b") != first
    assert split(1, "c") == first


def test_fsdp_on_cpu_is_refused_before_anything_is_written(tiny_model_dir, pref_jsonl, tmp_path):
    """accelerate enables FSDP only over a multi-accelerator group: on CPU (gloo, `use_cpu`) it silently drops the
    FSDP plugin and trains plain DDP. `accelerate_configs/fsdp.yaml` is refused there with the reason."""
    out = tmp_path / "out"
    result = launch(
        fsdp_launch_config(tmp_path), tiny_run_args(tiny_model_dir, pref_jsonl, out), tmp_path, check=False
    )
    assert result.returncode != 0
    assert "asks for FSDP, but the processes run on CPU (MULTI_CPU)" in result.stdout + result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_fsdp_check_names_only_a_dropped_fsdp():
    fsdp = {"ACCELERATE_USE_FSDP": "true"}
    with pytest.raises(ValueError, match="FSDP needs GPUs"):
        check_fsdp_launch(fsdp, "MULTI_CPU")
    check_fsdp_launch(fsdp, "MULTI_GPU")  # on GPUs accelerate turns FSDP on from here
    check_fsdp_launch({}, "MULTI_CPU")
