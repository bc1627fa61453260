"""Per-process harness of the multi-process tests: the same `scripts/run_adadpo.py` `main` users launch, plus a
report of what each process saw, so a test can compare a distributed run with a one-process run.

    accelerate launch --config_file CONFIG tests/helpers/distributed_harness.py <run_adadpo arguments>

writes `<output_dir>/harness/rank<R>.json` per process (see `report`). With `ADADPO_KILL_AFTER_SAVE=N` in the
environment every process SIGKILLs itself right after checkpoint-N is saved (no cleanup: a hard crash); with
`ADADPO_SIGTERM_AT_STEP=N` process 0 sends SIGTERM after step N (`SignalAtStep`). Exits as `run_adadpo.py` does:
75 after a stop signal.
One-process baselines call `run_and_report` in the test process itself.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

from adadpo.cli import run_adadpo
from adadpo.training.preemption import PREEMPTED_EXIT_CODE
from adadpo.training.trainer import AdaDPOTrainer
from tests.helpers.flash_reference import emulate_flash
from tests.helpers.runs import REPO_ROOT, OutOfMemoryAbove, extra_callbacks, harness_env, train


KILL_ENV = "ADADPO_KILL_AFTER_SAVE"
OOM_ENV = "ADADPO_OOM_ABOVE_TOKENS"  # "N:R": the policy's forward raises OutOfMemoryError above N tokens on rank R
SIGNAL_ENV = "ADADPO_SIGTERM_AT_STEP"  # process 0 sends SIGTERM to the launcher after this step (see SignalAtStep)
EMULATE_FLASH_ENV = "ADADPO_EMULATE_FLASH"
PREFLIGHT_ENV = "ADADPO_HARNESS_PREFLIGHT"  # run scripts/preflight.py's main instead (its exit code is the process's)


class KillAfterSave(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):  # after the staged checkpoint was renamed into place
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAtStep(TrainerCallback):
    """SIGTERM as a cluster sends it, at the end of optimizer step `step` (process 0): to the launcher when there is
    one (torchrun's agent forwards it to every process), else to this process; and once more while the stop's
    checkpoint is being written (a second signal must change nothing)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step and args.process_index == 0:
            os.kill(os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else os.getpid(), signal.SIGTERM)


def signal_again_while_saving() -> None:
    original = AdaDPOTrainer.save_extra_state

    def save_extra_state(self, folder):
        if self.stop_on_signal.received:
            os.kill(os.getpid(), signal.SIGTERM)
        original(self, folder)

    AdaDPOTrainer.save_extra_state = save_extra_state


def _column(dataset, name) -> list:
    return list(dataset[name])  # `datasets` returns a lazy Column


def _sha(values) -> str:
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()


def _shards(module) -> dict[str, bool]:
    """ZeRO-3: whether each parameter is split over the ranks (this rank holds a strict, non-empty part)."""
    return {name: 0 < p.ds_tensor.numel() < p.ds_numel for name, p in module.named_parameters()}


def report(trainer) -> dict:
    """What this process saw: its rank, the data splits it trained and evaluated on, the reference cache lookups,
    the precomputed reference log-probs, the logged steps, and (ZeRO-3) whether every tensor is partitioned."""
    accelerator = trainer.accelerator
    out = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "train_prompts_sha": _sha(_column(trainer.train_dataset, "prompt_ids")),
        "eval_prompts_sha": _sha(_column(trainer.eval_dataset, "prompt_ids"))
        if trainer.eval_dataset is not None
        else None,
        "ref_cache": dict(trainer.ref_cache.lookups) if trainer.ref_cache is not None else None,
        "reference": type(trainer.ref_model).__name__,
        "log_history": trainer.state.log_history,
        "oom_splits": trainer.oom_splitter.splits if trainer.oom_splitter is not None else None,
    }
    if "ref_chosen_logps" in trainer.train_dataset.column_names:
        out["ref_chosen_logps"] = _column(trainer.train_dataset, "ref_chosen_logps")
        out["ref_rejected_logps"] = _column(trainer.train_dataset, "ref_rejected_logps")
    if trainer.is_deepspeed_enabled:
        out["zero_stage"] = trainer.model_wrapped.zero_optimization_stage()
        if out["zero_stage"] == 3:
            out["policy_partitioned"] = _shards(accelerator.unwrap_model(trainer.model))
            if trainer.ref_model is not None:
                out["reference_partitioned"] = _shards(trainer.ref_model.module)
    if trainer.is_fsdp_enabled:
        out["fsdp_dtensor_params"] = sum(
            type(p).__name__ == "DTensor" for p in accelerator.unwrap_model(trainer.model).parameters()
        )
    return out


def write_report(trainer) -> None:
    folder = Path(trainer.args.output_dir) / "harness"
    folder.mkdir(parents=True, exist_ok=True)
    rank = trainer.accelerator.process_index
    (folder / f"rank{rank}.json").write_text(json.dumps(report(trainer)))  # one file per process: no interleaving


def read_reports(output_dir: Path, world_size: int) -> list[dict]:
    return [json.loads((Path(output_dir) / "harness" / f"rank{r}.json").read_text()) for r in range(world_size)]


def deepspeed_launch_config(folder: Path, stage: int, num_processes: int = 2, sp_size: int = 1) -> Path:
    """Accelerate + DeepSpeed config for CPU processes in fp32 (bf16/fp16 off in the DeepSpeed file, which then
    owns precision: accelerate refuses `mixed_precision` next to a `deepspeed_config_file`).
    `stage3_param_persistence_threshold: 0` makes ZeRO-3 partition every tensor of the tiny model (by default small
    tensors stay whole on every rank, which would leave a tiny model unpartitioned and the tests meaningless)."""
    zero = {"stage": stage, "overlap_comm": False, "contiguous_gradients": False}
    if stage == 3:
        zero |= {"stage3_param_persistence_threshold": 0, "stage3_gather_16bit_weights_on_model_save": True}
    ds_config = {
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
    }
    ds_path = Path(folder) / f"ds_zero{stage}.json"
    ds_path.write_text(json.dumps(ds_config))
    settings = {}
    if sp_size > 1:  # accelerate's sequence parallelism (DeepSpeed ALST / Ulysses), as accelerate_configs/ writes it
        settings["parallelism_config"] = {
            "parallelism_config_sp_size": sp_size,
            "parallelism_config_sp_backend": "deepspeed",
            "parallelism_config_dp_replicate_size": num_processes // sp_size,
        }
    return _launch_config(
        folder,
        f"zero{stage}" + (f"_sp{sp_size}" if sp_size > 1 else ""),
        distributed_type="DEEPSPEED",
        num_processes=num_processes,
        deepspeed_config={
            "deepspeed_config_file": str(ds_path),
            "deepspeed_multinode_launcher": "standard",
            "zero3_init_flag": stage == 3,
        },
        **settings,
    )


def fsdp_launch_config(folder: Path, num_processes: int = 2) -> Path:
    """`accelerate_configs/fsdp.yaml` (FSDP2, a unit per decoder layer, full state dict on save) for CPU in fp32."""
    fsdp = yaml.safe_load((REPO_ROOT / "accelerate_configs" / "fsdp.yaml").read_text())["fsdp_config"]
    return _launch_config(folder, "fsdp", distributed_type="FSDP", num_processes=num_processes, fsdp_config=fsdp)


def _launch_config(folder: Path, name: str, **settings) -> Path:
    launch = {
        "compute_environment": "LOCAL_MACHINE",
        "num_machines": 1,
        "machine_rank": 0,
        "mixed_precision": "no",
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": True,
        **settings,
    }
    if settings.get("distributed_type") == "DEEPSPEED":
        del launch["mixed_precision"]
    path = Path(folder) / f"accelerate_{name}.yaml"
    path.write_text(yaml.safe_dump(launch))
    return path


def launch(
    config: Path,
    argv: list[str],
    cwd: Path,
    kill_after_save: int | None = None,
    sigterm_at_step: int | None = None,
    oom_above_tokens: tuple[int, int] | None = None,
    check: bool = True,
    emulate_flash: bool = False,
    preflight: bool = False,
):
    """`accelerate launch --config_file config` this harness with `argv` (`config` None: `python` it, one process);
    the completed process. `emulate_flash`: flash-attention's code path on CPU through the reference kernel
    (tests/helpers/flash_reference.py)."""
    env = harness_env()
    if emulate_flash:
        env[EMULATE_FLASH_ENV] = "1"
    if preflight:
        env[PREFLIGHT_ENV] = "1"
    if kill_after_save is not None:
        env[KILL_ENV] = str(kill_after_save)
    if sigterm_at_step is not None:
        env[SIGNAL_ENV] = str(sigterm_at_step)
    if oom_above_tokens is not None:
        env[OOM_ENV] = "{}:{}".format(*oom_above_tokens)
    launcher = [sys.executable] if config is None else [sys.executable, "-m", "accelerate.commands.launch"]
    cmd = [*launcher, *(["--config_file", str(config)] if config else []), __file__, *argv]
    # Its own process group, killed whole on a timeout: a hung rank must not outlive the test and block pytest.
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"accelerate launch timed out after 900 s:\n{stdout[-3000:]}{stderr[-6000:]}") from None
    result = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


# Compared relatively: the loss and quantities of their own scale. Rewards and margins are differences of two
# log-probs of ~-90 (fp32 ulp ~1e-5), so they get an absolute tolerance instead.
RELATIVE_KEYS = ("loss", "logps/chosen", "logps/rejected", "lengths/chosen", "batch/pairs", "num_tokens")
DIFFERENCE_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "kl/beta_margin")


def assert_logs_close(a: list[dict], b: list[dict], rel: float):
    assert [e["step"] for e in a] == [e["step"] for e in b]
    for x, y in zip(a, b, strict=True):
        for key in RELATIVE_KEYS:
            assert x[key] == pytest.approx(y[key], rel=rel), (x["step"], key)
        for key in DIFFERENCE_KEYS:
            if key in y:
                assert x[key] == pytest.approx(y[key], abs=10 * rel), (x["step"], key)


def compared(key: str) -> bool:
    """The logged numbers two equal runs must share: all but the clock and transformers' FLOP estimate (it counts
    padded tokens, which differ between layouts)."""
    return key not in ("step", "epoch", "total_flos") and not key.endswith(("runtime", "_per_second"))


def assert_every_logged_number_close(logs: list[dict], expected: list[dict], rel: float):
    """Same steps, same keys, and every compared number within `rel` (relative, or absolute near 0)."""
    assert [e["step"] for e in logs] == [e["step"] for e in expected]
    for entry, reference in zip(logs, expected, strict=True):
        assert set(entry) == set(reference), reference["step"]
        for key in filter(compared, reference):
            if isinstance(reference[key], int | float):
                assert entry[key] == pytest.approx(reference[key], rel=rel, abs=rel), (reference["step"], key)


def assert_weights_close(a: Path, b: Path, rtol: float):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert set(wa) == set(wb)
    for name in wb:  # relative to the tensor's scale: a weight that crosses 0 has no meaningful elementwise rel
        torch.testing.assert_close(wa[name], wb[name], rtol=rtol, atol=rtol * wb[name].abs().max().item(), msg=name)


def run_and_report(argv: list[str]) -> tuple[object, dict]:
    """A one-process run in this process: the trainer and its report."""
    trainer = train(run_adadpo, argv)
    return trainer, report(trainer)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if os.environ.get(EMULATE_FLASH_ENV):
        emulate_flash(pytest.MonkeyPatch())
    if os.environ.get(PREFLIGHT_ENV):
        from adadpo.cli import preflight

        sys.exit(preflight.main(sys.argv[1:]))
    callbacks = [KillAfterSave(int(os.environ[KILL_ENV]))] if os.environ.get(KILL_ENV) else []
    if os.environ.get(OOM_ENV):
        tokens, rank = map(int, os.environ[OOM_ENV].split(":"))
        callbacks.append(OutOfMemoryAbove(tokens, ranks={rank}))
    if os.environ.get(SIGNAL_ENV):
        callbacks.append(SignalAtStep(int(os.environ[SIGNAL_ENV])))
        signal_again_while_saving()
    with extra_callbacks(*callbacks):
        trainer = train(run_adadpo, sys.argv[1:])
    write_report(trainer)
    trainer.accelerator.wait_for_everyone()
    sys.exit(PREEMPTED_EXIT_CODE if trainer.stop_on_signal.stopped else 0)
