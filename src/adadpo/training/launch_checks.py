"""Launch checks: what `accelerate launch` started must match what the recipe asks for (one process group, the
backend that honours the config, the paper's global batch). `apply_launch` runs them where a run is built
(`adadpo.training.build.build_trainer`, so `scripts/run_adadpo.py` and `scripts/preflight.py` alike), before a model is
loaded or a file is written; building a config does not read the launch environment."""

import os

from adadpo.losses import get_loss_spec
from adadpo.training.sequence_parallel import LaunchParallelism, check_launch
from adadpo.training.trl_compat import refresh_deepspeed_config


def apply_launch(training_args, environ=None) -> None:
    """Check the launch against the recipe and derive `gradient_accumulation_steps` from `global_batch_size`."""
    environ = os.environ if environ is None else environ
    check_process_group(int(environ.get("WORLD_SIZE", "1")), training_args.world_size)
    check_fsdp_launch(environ, training_args.distributed_state.distributed_type.value)
    parallelism = LaunchParallelism.from_environ(environ)
    uses_deepspeed = environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" or bool(
        training_args.deepspeed
    )
    check_launch(parallelism, training_args, uses_deepspeed)
    check_alpha_dpo_batch(training_args, training_args.world_size // parallelism.sp_size)
    if training_args.global_batch_size is not None:
        # the ranks of a sequence-parallel group share each micro-batch: the data-parallel size is world / sp
        accumulation = derive_gradient_accumulation(
            training_args.global_batch_size,
            training_args.world_size // parallelism.sp_size,
            training_args.per_device_train_batch_size,
        )
        if accumulation != training_args.gradient_accumulation_steps:
            training_args.gradient_accumulation_steps = accumulation
            refresh_deepspeed_config(training_args)


def check_process_group(launched: int, world_size: int) -> None:
    """`accelerate launch` started several processes that did not join one group (e.g. `cpu_2proc.yaml` without
    `use_cpu: true`): each would silently train alone on the full data."""
    if launched > 1 and world_size == 1:
        raise ValueError(
            f"Launched with {launched} processes, but this process does not see the others (world_size 1), so each "
            "would train on its own. On a machine without GPUs set `use_cpu: true` in the recipe."
        )


def check_fsdp_launch(environ, distributed_type: str) -> None:
    """The launch config asks for FSDP (`accelerate launch` sets ACCELERATE_USE_FSDP), but these processes run on
    CPU: accelerate turns FSDP on only over a multi-accelerator process group, so it would silently train plain DDP,
    every process holding the whole model."""
    if environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and distributed_type == "MULTI_CPU":
        raise ValueError(
            f"The accelerate config asks for FSDP, but the processes run on CPU ({distributed_type}), where "
            "accelerate drops FSDP and trains plain DDP. FSDP needs GPUs; on CPU launch with cpu_2proc.yaml or a "
            "DeepSpeed config."
        )


def derive_gradient_accumulation(global_batch_size: int, data_parallel_size: int, per_device_batch_size: int) -> int:
    """Keep the paper's global batch whatever the GPU count: GA = global / (data-parallel ranks * per-device); the
    data-parallel ranks are the processes, or the sequence-parallel groups."""
    per_step = data_parallel_size * per_device_batch_size
    if global_batch_size <= 0 or global_batch_size % per_step != 0:
        raise ValueError(
            f"`global_batch_size` ({global_batch_size}) must be a positive multiple of the data-parallel size "
            f"({data_parallel_size}) x per_device_train_batch_size ({per_device_batch_size}) = {per_step}. "
            "Change `per_device_train_batch_size` or `global_batch_size`."
        )
    return global_batch_size // per_step


def check_alpha_dpo_batch(training_args, data_parallel_size: int) -> None:
    """alpha-DPO normalizes each pair's margin by the running std of the gathered micro-batches' margins: one pair per
    gathered micro-batch has no std, so the normalizer would keep sigma = 1 for the whole run (under sequence
    parallelism a micro-batch is one pair per group)."""
    pairs = data_parallel_size * training_args.per_device_train_batch_size
    normalized = [n for n in training_args.loss_names if get_loss_spec(n).needs_margin_normalizer]
    if normalized and pairs < 2:
        raise ValueError(
            f"`{normalized[0]}` estimates its margin std from each micro-batch's pairs over the data-parallel ranks, "
            f"here {pairs}: the std would never be estimated. Use `per_device_train_batch_size` >= 2 (more "
            "data-parallel ranks: fewer GPUs per sequence-parallel group), or another loss."
        )
