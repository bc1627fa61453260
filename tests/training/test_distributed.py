"""Plain DDP: two CPU processes (gloo) through `accelerate launch accelerate_configs/cpu_2proc.yaml`, the way users
launch on GPUs, proven equal to one process; and the train/test split, which must follow the run's seed on every
process. fp32: the only differences from one process are summation order (hence 1e-4 relative)."""

import math

import pytest

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


def test_ddp_packed_two_processes_equal_one_process(tiny_model_dir, pref_jsonl, tmp_path):
    """Each rank packs its own 2 pairs (`padding_free: true`); losses, metrics gathered over both ranks and the final
    weights equal a 1-process packed run of the same 4 pairs per step; both ranks hold out the same eval split."""
    common = {
        "loss_type": "adadpo",
        "padding_free": True,
        "attn_implementation": "sdpa",
        "max_steps": 3,
        "global_batch_size": 4,
        "test_split_size": 4,
        "seed": 5,
    }
    two = tmp_path / "two"
    launch(
        REPO_ROOT / "accelerate_configs" / "cpu_2proc.yaml",
        tiny_run_args(tiny_model_dir, pref_jsonl, two, per_device_train_batch_size=2, **common),
        tmp_path,
    )
    rank0, rank1 = read_reports(two, 2)
    _, one = run_and_report(
        tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "one", per_device_train_batch_size=4, **common)
    )
    logs = step_logs(rank0)
    assert [e["batch/pairs"] for e in logs] == [4.0, 4.0, 4.0]  # gathered over both ranks
    assert logs[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert_logs_close(logs, step_logs(one), rel=1e-4)
    assert_weights_close(two, tmp_path / "one", rtol=1e-4)
    assert rank0["eval_prompts_sha"] == rank1["eval_prompts_sha"] == one["eval_prompts_sha"]
    assert rank0["train_prompts_sha"] == rank1["train_prompts_sha"] == one["train_prompts_sha"]
    assert (two / "README.md").exists()


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
