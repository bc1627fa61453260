"""Every accelerate config loads with accelerate's own loader and launch-time validation, and resolves to the
distributed setup its header promises; the CPU two-process config really forms one group of two ranks."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env


REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "accelerate_configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))

# What each file must resolve to. A new config needs a row here, so its promise is tested too.
EXPECTED = {
    "deepspeed_zero1.yaml": dict(
        type=DistributedType.DEEPSPEED, processes=8, precision="bf16", zero_stage=1, offload="none", save_16bit=False
    ),
    "deepspeed_zero2.yaml": dict(
        type=DistributedType.DEEPSPEED, processes=8, precision="bf16", zero_stage=2, offload="none", save_16bit=False
    ),
    "deepspeed_zero3.yaml": dict(
        type=DistributedType.DEEPSPEED, processes=8, precision="bf16", zero_stage=3, offload="none", save_16bit=True
    ),
    "deepspeed_zero3_sp8.yaml": dict(
        type=DistributedType.DEEPSPEED,
        processes=8,
        precision="bf16",
        zero_stage=3,
        offload="none",
        save_16bit=True,
        sp_size=8,
    ),
    "deepspeed_zero3_offload.yaml": dict(
        type=DistributedType.DEEPSPEED, processes=8, precision="bf16", zero_stage=3, offload="cpu", save_16bit=True
    ),
    "multi_gpu.yaml": dict(type=DistributedType.MULTI_GPU, processes=8, precision="bf16", use_cpu=False),
    "fsdp.yaml": dict(type=DistributedType.FSDP, processes=8, precision="bf16", fsdp_version=2),
    "cpu.yaml": dict(type=DistributedType.NO, processes=1, precision="no", use_cpu=True),
    "cpu_2proc.yaml": dict(type=DistributedType.MULTI_GPU, processes=2, precision="no", use_cpu=True),
}


def validated_launch_args(path: Path):
    """What `accelerate launch --config_file path` would run with, without launching anything."""
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    return _validate_launch_command(args)


def test_every_config_has_an_expectation():
    assert sorted(EXPECTED) == [p.name for p in CONFIGS]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_resolves(path):
    expected = EXPECTED[path.name]
    assert path.read_text().startswith("#"), f"{path.name} needs a top comment saying what it is for"
    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == expected["type"]
    assert config.num_processes == expected["processes"]
    assert config.num_machines == 1
    args, defaults, _ = validated_launch_args(path)
    assert args.num_processes == expected["processes"]
    assert args.mixed_precision == expected["precision"]
    assert args.use_deepspeed == (expected["type"] == DistributedType.DEEPSPEED)
    assert args.use_fsdp == (expected["type"] == DistributedType.FSDP)
    assert args.multi_gpu == (expected["type"] == DistributedType.MULTI_GPU)
    if "use_cpu" in expected:
        assert bool(args.use_cpu) == expected["use_cpu"]


@pytest.mark.parametrize("name", [n for n, e in EXPECTED.items() if "zero_stage" in e])
def test_deepspeed_plugin_from_config(name):
    """The DeepSpeed JSON the launch would hand to the Trainer."""
    expected = EXPECTED[name]
    args, defaults, mixed_precision_from_config = validated_launch_args(CONFIG_DIR / name)
    # Mirrors accelerate's launch_command for DeepSpeed: which fields the config file set.
    fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mixed_precision_from_config else [])
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    _, env = prepare_deepspeed_cmd_env(args)
    with mock.patch.dict(os.environ, env):
        plugin = DeepSpeedPlugin()
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == expected["zero_stage"]
    assert zero["offload_optimizer"]["device"] == expected["offload"]
    assert zero["offload_param"]["device"] == expected["offload"]
    assert zero["stage3_gather_16bit_weights_on_model_save"] is expected["save_16bit"]
    assert plugin.zero3_init_flag is (expected["zero_stage"] == 3)
    # Left to the Trainer, which takes it from the recipe-derived gradient_accumulation_steps.
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sequence_parallelism_reaches_the_processes_as_the_trainer_reads_it(name):
    """accelerate's launch turns the config's parallelism_config block into the environment of each process, where
    `LaunchParallelism` (and accelerate's own ParallelismConfig) read it; configs without the block have none."""
    from adadpo.training.sequence_parallel import LaunchParallelism

    args, defaults, mixed_precision_from_config = validated_launch_args(CONFIG_DIR / name)
    if args.use_deepspeed:
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mixed_precision_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args) if args.multi_gpu or args.use_fsdp else {}
    parallelism = LaunchParallelism.from_environ(env)
    assert parallelism.sp_size == EXPECTED[name].get("sp_size", 1)
    if parallelism.enabled:
        assert parallelism.dp_replicate_size * parallelism.sp_size == EXPECTED[name]["processes"]


def test_fsdp_plugin_from_config():
    args, _, _ = validated_launch_args(CONFIG_DIR / "fsdp.yaml")
    env = prepare_multi_gpu_env(args)
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == EXPECTED["fsdp.yaml"]["fsdp_version"]
    assert plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"  # the final save is a plain HF folder
    assert plugin.cpu_ram_efficient_loading is True
    assert plugin.activation_checkpointing is False  # the recipes' activation_checkpointing does it, not FSDP


# Each process writes its own file: two processes printing to one pipe can interleave their lines.
WORLD_PROBE = """
import os, sys
from pathlib import Path
from transformers import TrainingArguments
args = TrainingArguments(output_dir=sys.argv[1], use_cpu=sys.argv[2] == "1", report_to="none")
line = f"RANK {args.process_index} WORLD {args.world_size} {args.distributed_state.distributed_type.name}"
Path(sys.argv[3], f"probe-{os.getpid()}.txt").write_text(line)
"""


def launch_probe(tmp_path: Path, use_cpu: bool) -> list[str]:
    probe = tmp_path / "probe.py"
    probe.write_text(WORLD_PROBE)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIG_DIR / "cpu_2proc.yaml"),
        "--main_process_port",
        "29517",
        str(probe),
        str(tmp_path / "out"),
        "1" if use_cpu else "0",
        str(tmp_path),
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return sorted(path.read_text() for path in tmp_path.glob("probe-*.txt"))


def test_cpu_2proc_forms_one_group_of_two_ranks(tmp_path):
    """The claim in cpu_2proc.yaml: two ranks of one gloo group when the training args say use_cpu."""
    assert launch_probe(tmp_path, use_cpu=True) == ["RANK 0 WORLD 2 MULTI_CPU", "RANK 1 WORLD 2 MULTI_CPU"]


def test_slurm_script_is_valid_bash_and_uses_existing_files():
    script = REPO_ROOT / "scripts" / "slurm" / "launch.slurm"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for needed in ("--machine_rank", "--main_process_ip", "--num_machines", "--num_processes", "srun"):
        assert needed in text
    assert "accelerate_configs/deepspeed_zero3.yaml" in text and "scripts/run_adadpo.py" in text


def _slurm_run(tmp_path, launcher_body: str, *args, signal_after: float | None = None, restarts: int = 0,
               signal_kind=signal.SIGUSR1, scancel_body: str = ""):  # fmt: skip
    """scripts/slurm/launch.slurm with stand-ins for srun (runs the task here), scancel and scontrol (record their
    arguments) and `accelerate` (records its arguments, then runs `launcher_body`)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("accelerate.txt", "scancel.txt", "scontrol.txt"):
        (tmp_path / name).unlink(missing_ok=True)
    stubs = {
        "srun": 'while [[ $1 == --* ]]; do shift; done; "$@"',  # its own options, then the task
        "scancel": f'echo "$@" >> {tmp_path}/scancel.txt\n{scancel_body}',
        "scontrol": f'[[ $1 == show ]] && echo node0 || echo "$@" >> {tmp_path}/scontrol.txt',
        "accelerate": f'echo "$@" > {tmp_path}/accelerate.txt\n{launcher_body}',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "42", "SLURM_NNODES": "1",
           "SLURM_JOB_NODELIST": "node0", "SLURM_PROCID": "0", "SLURM_SUBMIT_DIR": str(tmp_path),
           "SLURM_RESTART_COUNT": str(restarts)}  # fmt: skip
    script = REPO_ROOT / "scripts" / "slurm" / "launch.slurm"
    proc = subprocess.Popen(["bash", str(script), "recipe.yaml", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    if signal_after is not None:
        time.sleep(signal_after)
        proc.send_signal(signal_kind)  # SIGUSR1: what `#SBATCH --signal=B:USR1@300` sends; SIGTERM: a preemption
    out, err = proc.communicate(timeout=60)
    read = lambda name: (tmp_path / name).read_text() if (tmp_path / name).exists() else ""  # noqa: E731
    return proc.returncode, read("accelerate.txt"), read("scancel.txt"), read("scontrol.txt"), out + err


# Exit codes of the launch after a stop with a checkpoint: 75 (`python scripts/run_adadpo.py`, one process), 128 + 15
# and 128 + 10 (`accelerate launch`: torchrun's launcher forwards the signal, then exits with it)
@pytest.mark.parametrize("exit_code", [75, 143, 138])
def test_slurm_script_requeues_after_a_stop_with_a_checkpoint(tmp_path, exit_code):
    code, launched, _, scontrol, output = _slurm_run(tmp_path, f"exit {exit_code}")
    assert code == 0 and scontrol.strip() == "requeue 42", output
    assert "--resume_from_checkpoint" not in launched  # the first run starts as the recipe says


def test_a_requeued_slurm_job_resumes_with_auto_unless_told_otherwise(tmp_path):
    _, launched, _, _, _ = _slurm_run(tmp_path, "exit 0", restarts=1)
    assert launched.rstrip().endswith("--resume_from_checkpoint=auto")
    _, launched, _, _, _ = _slurm_run(tmp_path, "exit 0", "--resume_from_checkpoint=hub", restarts=1)
    assert launched.rstrip().endswith("--resume_from_checkpoint=hub") and "=auto" not in launched


def test_slurm_script_does_not_requeue_a_finished_or_failed_run(tmp_path):
    for exit_code in (0, 1):
        code, _, _, scontrol, _ = _slurm_run(tmp_path, f"exit {exit_code}")
        assert code == exit_code and scontrol == ""


def test_slurm_script_forwards_the_warning_signal_and_requeues_unless_the_run_finished(tmp_path):
    code, _, scancel, scontrol, output = _slurm_run(tmp_path, "sleep 2; exit 138", signal_after=1.0)
    assert scancel.strip() == "--signal=USR1 42", output  # to every process of the job's steps
    assert code == 0 and scontrol.strip() == "requeue 42"
    code, _, scancel, scontrol, output = _slurm_run(tmp_path, "sleep 2; exit 0", signal_after=1.0)
    assert scancel.strip() == "--signal=USR1 42" and code == 0 and scontrol == "", output  # it finished in time


def test_slurm_script_requeues_a_failure_after_the_warning_but_not_past_the_cap(tmp_path):
    code, _, _, scontrol, output = _slurm_run(tmp_path, "sleep 2; exit 1", signal_after=1.0)
    assert code == 0 and scontrol.strip() == "requeue 42", output  # e.g. the launcher killed at the grace's end
    code, _, _, scontrol, output = _slurm_run(tmp_path, "exit 75", restarts=20)
    assert code == 75 and scontrol == "" and "not requeueing" in output


def test_slurm_script_requeues_after_a_preemption_sigterm(tmp_path):
    code, _, scancel, scontrol, output = _slurm_run(tmp_path, "sleep 2; exit 1", signal_after=1.0,
                                                    signal_kind=signal.SIGTERM)  # fmt: skip
    assert code == 0 and scontrol.strip() == "requeue 42" and scancel == "", output  # Slurm signals the steps itself


def test_slurm_script_reads_the_status_of_a_step_that_ended_during_the_trap(tmp_path):
    """The step exits 0 while the warning's trap is still running (a slow scancel): it finished; no requeue."""
    code, _, scancel, scontrol, output = _slurm_run(tmp_path, "sleep 1.5; exit 0", signal_after=1.0,
                                                    scancel_body="sleep 2")  # fmt: skip
    assert scancel.strip() == "--signal=USR1 42" and code == 0 and scontrol == "", output
