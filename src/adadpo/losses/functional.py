"""`preference_loss`: the functional form of `PreferenceLoss`, for use without a trainer (README, docs, tests)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from adadpo.losses.loss import PreferenceLoss
from adadpo.losses.normalizer import AlphaMarginNormalizer
from adadpo.losses.types import LossOutput, PreferenceInputs


def _check_normalizer(name: str, normalizer: Any, hparams: dict) -> None:
    """A functional call cannot keep alpha-DPO's running statistics: the caller must own the normalizer."""
    if not isinstance(normalizer, AlphaMarginNormalizer):
        raise ValueError(
            f"loss {name!r} needs margin_normalizer=AlphaMarginNormalizer(momentum=alpha_dpo_momentum), "
            f"got {type(normalizer).__name__}: the trainer must own one for the whole run, pass it on every "
            "call and save it with checkpoints (a fresh one per call would reset the running statistics)"
        )
    if "alpha_dpo_momentum" in hparams and hparams["alpha_dpo_momentum"] != normalizer.momentum:
        raise ValueError(
            f"alpha_dpo_momentum={hparams['alpha_dpo_momentum']} but the margin_normalizer was built with "
            f"momentum={normalizer.momentum}; build it with AlphaMarginNormalizer(momentum=alpha_dpo_momentum)"
        )


# The batch's (B,) tensors, as `adadpo.losses.inputs.make_inputs` takes them; every other keyword is a hyperparameter.
TENSOR_ARGUMENTS = tuple(field.name for field in dataclasses.fields(PreferenceInputs))


def preference_loss(
    name: str | Sequence[str],
    *,
    weights: Sequence[float] | None = None,
    margin_normalizer: AlphaMarginNormalizer | None = None,
    margin_gather: Callable[[Tensor], Tensor] | None = None,
    update_margin_stats: bool | None = None,
    **tensors_and_hparams: Any,
) -> LossOutput:
    """Compute the registered loss `name` (or the sum of a list of losses, with `weights`) on a batch of B pairs; see
    `PreferenceLoss` and docs/losses.md.

    Keywords: the batch (`policy_chosen_logps`, `policy_rejected_logps`, `chosen_lengths`, `rejected_lengths`,
    optional `ref_chosen_logps`, `ref_rejected_logps`, `reward_margins`; (B,) tensors) and hyperparameters by
    config field name (`beta`, `adadpo_clip`, ...; unknown names raise, missing ones take their defaults).

    alpha_dpo only: `margin_normalizer` (required), `margin_gather` (e.g. `accelerator.gather`, used to gather
    the margins across ranks before updating the statistics) and `update_margin_stats` (False in evaluation);
    left as None they fall back to the normalizer's `gather` / `update` attributes.
    """
    tensors = {k: v for k, v in tensors_and_hparams.items() if k in TENSOR_ARGUMENTS}
    hparams = {k: v for k, v in tensors_and_hparams.items() if k not in TENSOR_ARGUMENTS}
    loss = PreferenceLoss(name, weights=weights, margin_normalizer=margin_normalizer, **hparams)
    inputs = loss.inputs(**tensors)
    if loss.normalizer is not None:
        _check_normalizer(loss.name, margin_normalizer, hparams)
    return loss.compute(inputs, training=update_margin_stats, gather=margin_gather)
