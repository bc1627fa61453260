"""`PreferenceLoss`: one loss of the registry, built once from the config and then called on every batch.

    loss_fn = PreferenceLoss.from_config(args)          # or PreferenceLoss("adadpo", beta=0.1, adadpo_clip=2.0)
    out = loss_fn(policy_chosen_logps=lw, policy_rejected_logps=ll, chosen_lengths=nw, rejected_lengths=nl,
                  ref_chosen_logps=rw, ref_rejected_logps=rl, training=True, gather=accelerator.gather)

It holds the registry entry, only the hyperparameters that loss reads (validated once), and its state: alpha-DPO's
running margin statistics, which a trainer saves with checkpoints through `state_dict()` / `load_state_dict()`.
Nothing looks the name up per step. `preference_loss(name, ...)` is the functional form of the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import Tensor

from adadpo.losses.hparams import validate_loss_hparams
from adadpo.losses.inputs import make_inputs
from adadpo.losses.normalizer import AlphaMarginNormalizer
from adadpo.losses.specs import ALL_SPECS
from adadpo.losses.types import LossOutput, LossSpec, PreferenceInputs


LOSS_SPECS: dict[str, LossSpec] = {spec.name: spec for spec in sorted(ALL_SPECS, key=lambda s: s.name)}
LOSSES: tuple[str, ...] = tuple(LOSS_SPECS)
REFERENCE_FREE_LOSSES: tuple[str, ...] = tuple(n for n, s in LOSS_SPECS.items() if not s.needs_reference)


def get_loss_spec(name: str) -> LossSpec:
    """The registry entry for `name`; unknown names raise a ValueError listing every registered loss."""
    if name not in LOSS_SPECS:
        raise ValueError(f"unknown loss {name!r} (`loss_type`); registered losses are: {', '.join(LOSSES)}")
    return LOSS_SPECS[name]


class PreferenceLoss:
    """The loss `name` with its hyperparameters (config field names; unknown ones raise, missing ones take their
    defaults, ones the loss does not read are dropped) and, for alpha-DPO, its margin normalizer (a new one from
    `alpha_dpo_momentum` unless `margin_normalizer` is given)."""

    def __init__(self, name: str, *, margin_normalizer: AlphaMarginNormalizer | None = None, **hparams: Any):
        self.spec = get_loss_spec(name)
        resolved = validate_loss_hparams(hparams)
        self.hparams = {k: resolved[k] for k in self.spec.hparams if k not in self.spec.state_hparams}
        self.normalizer = None
        if self.spec.needs_margin_normalizer:
            self.normalizer = margin_normalizer or AlphaMarginNormalizer(momentum=resolved["alpha_dpo_momentum"])

    @classmethod
    def from_config(cls, args) -> PreferenceLoss:
        """From an `AdaDPOConfig` (its `loss_type` and `loss_hparams`)."""
        return cls(args.loss_type, **args.loss_hparams)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def needs_reference(self) -> bool:
        return self.spec.needs_reference

    @property
    def needs_reward_margin(self) -> bool:
        return self.spec.needs_reward_margin

    def __call__(
        self,
        *,
        training: bool | None = None,
        gather: Callable[[Tensor], Tensor] | None = None,
        **tensors: Tensor | None,
    ) -> LossOutput:
        """`tensors` are `adadpo.losses.inputs.make_inputs`' (B,) arguments: summed completion log-probs of policy
        and reference, completion token counts (>= 1) and MADPO's reward margins; what the loss does not read
        (e.g. reference log-probs for a reference-free loss) is ignored. `training` (update alpha-DPO's statistics)
        and `gather` (collect its margins from every rank first, e.g. `accelerator.gather`) fall back, when None,
        to the normalizer's `update` / `gather` attributes."""
        return self.compute(self.inputs(**tensors), training=training, gather=gather)

    def inputs(self, **tensors: Tensor | None) -> PreferenceInputs:
        """The batch, validated once: what this loss needs beyond the policy's log-probs is there (else a ValueError
        that says how to provide it), shapes and lengths are right, and everything is cast to one float dtype."""
        if self.needs_reference and (
            tensors.get("ref_chosen_logps") is None or tensors.get("ref_rejected_logps") is None
        ):
            raise ValueError(
                f"loss {self.name!r} needs reference log-probs (ref_chosen_logps and ref_rejected_logps); provide a "
                f"reference model (or precomputed reference log-probs) or pick a reference-free loss: "
                f"{', '.join(REFERENCE_FREE_LOSSES)}"
            )
        if self.needs_reward_margin and tensors.get("reward_margins") is None:
            raise ValueError(
                f"loss {self.name!r} needs per-pair reward margins h_rm = r(x, y_w) - r(x, y_l) (reward_margins=...): "
                "add a `reward_margin` column to the dataset, or `score_chosen` and `score_rejected` columns from "
                "which the trainer computes it"
            )
        if not self.needs_reference:
            tensors = {**tensors, "ref_chosen_logps": None, "ref_rejected_logps": None}
        if not self.needs_reward_margin:
            tensors = {**tensors, "reward_margins": None}
        return make_inputs(**tensors)

    def compute(
        self, inputs: PreferenceInputs, *, training: bool | None = None, gather: Callable | None = None
    ) -> LossOutput:
        """The loss of a batch `inputs()` validated."""
        kwargs = dict(self.hparams)
        if self.normalizer is not None:
            kwargs["normalize"] = partial(self.normalizer.normalize, gather=gather, update=training)
        return self.spec.fn(inputs, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep (plain JSON values): alpha-DPO's statistics, else nothing."""
        return {} if self.normalizer is None else {"margin_normalizer": self.normalizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.normalizer is not None and state.get("margin_normalizer") is not None:
            self.normalizer.load_state_dict(state["margin_normalizer"])

    def __repr__(self) -> str:
        return f"PreferenceLoss({self.name!r}, {self.hparams})"
