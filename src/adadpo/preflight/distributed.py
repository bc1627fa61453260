"""Check 4, distributed: the batch arithmetic, the same loss on every rank for the same pairs, and the reference the
recipe names (live, precomputed or cached: the cache key and whether it hits)."""

import os

import torch

from adadpo.preflight.batches import collate, model_dtype
from adadpo.preflight.identity import TOLERANCE
from adadpo.preflight.report import FAIL, PASS, Report, fmt


GROUP = "4 distributed"


def check_batch_arithmetic(report: Report, args, world_size: int, sp_size: int = 1) -> None:
    """Data-parallel ranks (the processes, or their sequence-parallel groups) x per-device batch x accumulation."""
    per_device, accumulation = args.per_device_train_batch_size, args.gradient_accumulation_steps
    world_size //= sp_size
    product = world_size * per_device * accumulation
    target = args.global_batch_size
    status = PASS if target is None or product == target else FAIL
    value = (
        f"{world_size} x {per_device} x {accumulation} = {product}"
        + (f" (SP groups of {sp_size})" if sp_size > 1 else "")
        + (f" (global_batch_size {target})" if target is not None else " (global_batch_size not set)")
    )
    fix = (
        f"launch {args.world_size} processes as the recipe expects, or set `global_batch_size` to a multiple of "
        f"{world_size * per_device} (processes x per_device_train_batch_size)"
    )
    report.add(GROUP, "processes x per-device batch x accumulation", status, value, fix)


def check_same_loss(report: Report, trainer, step0_losses: torch.Tensor) -> None:
    """Every rank computed the per-pair losses of the same rows (the identity check's): gather and compare."""
    accelerator = trainer.accelerator
    gathered = accelerator.gather(step0_losses.to(accelerator.device).reshape(1, -1)).float().cpu()
    spread = float((gathered - gathered[0]).abs().max())
    tol = TOLERANCE.get(model_dtype(trainer), 2e-2)
    report.add(
        GROUP,
        "every rank: same loss for the same pairs",
        PASS if spread <= tol else FAIL,
        f"{gathered.shape[0]} ranks x {gathered.shape[1]} pairs, max spread {fmt(spread)} (tol {tol})",
        "ranks disagree on the same batch: different weights, data or kernels per rank; check that every "
        "process loads the same `model_name_or_path`/`model_revision` and the same launcher settings",
    )


def cache_fix(trainer, reference) -> str:
    if reference.mode == "cached":
        entry = os.path.join(trainer.args.ref_logps_cache_dir, reference.lookup["key"])
        return (
            f"the cached reference log-probs were computed from other weights: delete {entry} (or point "
            "`ref_logps_cache_dir` elsewhere) so they are recomputed"
        )
    if reference.mode == "live":
        return (
            "the reference model is not the policy at step 0: check `model_name_or_path`/`model_revision` "
            "(and the PEFT setup), or the attention kernel (check 3)"
        )
    return "the reference pass disagrees with the policy forward: check the attention kernel (check 3) and dtype"


def check_reference(report: Report, trainer, reference, batches: list[list[dict]]) -> None:
    """Which reference the run uses; a cache hit is recomputed on the sample and must match the entry."""
    if reference.mode != "cached":
        report.add(GROUP, "reference", PASS, reference.describe())
        return
    worst = 0.0
    tol = TOLERANCE.get(model_dtype(trainer), 2e-2)
    for rows in batches:
        batch = collate(trainer, rows)
        with torch.no_grad():
            fresh = trainer.compute_ref_log_probs(trainer.ref_model or trainer.model_wrapped, batch)
        for cached, recomputed in zip(reference.logps(batch), fresh, strict=True):
            recomputed = recomputed.float().to(cached.device)
            worst = max(worst, float(((cached - recomputed).abs() / (recomputed.abs() * tol + 1e-3)).max()))
    report.add(
        GROUP,
        "reference",
        PASS if worst <= 1 else FAIL,
        f"{reference.describe()}; cached vs recomputed max |d| / tol {fmt(worst)}",
        cache_fix(trainer, reference),
    )
