"""Checking and casting the tensors a loss receives."""

from __future__ import annotations

import torch
from torch import Tensor

from adadpo.losses.numerics import compute_dtype
from adadpo.losses.types import PreferenceInputs


def _check_vector(name: str, value: object, shape: torch.Size | None) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B,), got {type(value).__name__}")
    if value.dim() != 1 or value.numel() == 0:
        raise ValueError(f"{name} must have shape (B,) with B >= 1 (one value per pair), got {tuple(value.shape)}")
    if shape is not None and value.shape != shape:
        raise ValueError(
            f"{name} has shape {tuple(value.shape)} but policy_chosen_logps has {tuple(shape)}; "
            "every per-pair tensor must have the same (B,) shape"
        )
    return value


def make_inputs(
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    reward_margins: Tensor | None = None,
    pair_log_weights: Tensor | None = None,
) -> PreferenceInputs:
    """Validate shapes and lengths (>= 1) and cast everything to the policy's float dtype (at least float32)."""
    lw = _check_vector("policy_chosen_logps", policy_chosen_logps, None)
    shape = lw.shape
    ll = _check_vector("policy_rejected_logps", policy_rejected_logps, shape)
    for name, t in (("policy_chosen_logps", lw), ("policy_rejected_logps", ll)):
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor of summed log-probs, got {t.dtype}")
    dtype = torch.promote_types(compute_dtype(lw), compute_dtype(ll))

    def cast(name: str, t: Tensor | None) -> Tensor | None:
        return None if t is None else _check_vector(name, t, shape).to(dtype)

    lengths = {}
    for name, t in (("chosen_lengths", chosen_lengths), ("rejected_lengths", rejected_lengths)):
        n = cast(name, t)
        if not bool(torch.all(n >= 1)):  # also catches NaN
            raise ValueError(f"{name} must be completion token counts >= 1 (an empty completion has no log-prob)")
        lengths[name] = n
    margins = cast("reward_margins", reward_margins)
    if margins is not None and not bool(torch.isfinite(margins).all()):
        raise ValueError("reward_margins must be finite (check the `reward_margin` / score columns of the dataset)")
    return PreferenceInputs(
        policy_chosen_logps=lw.to(dtype),
        policy_rejected_logps=ll.to(dtype),
        chosen_lengths=lengths["chosen_lengths"],
        rejected_lengths=lengths["rejected_lengths"],
        ref_chosen_logps=cast("ref_chosen_logps", ref_chosen_logps),
        ref_rejected_logps=cast("ref_rejected_logps", ref_rejected_logps),
        reward_margins=margins,
        pair_log_weights=None if pair_log_weights is None else cast("pair_log_weights", pair_log_weights).detach(),
    )
