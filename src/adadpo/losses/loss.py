"""`PreferenceLoss`: a loss of the registry (or a weighted sum of several, TRL's `loss_weights`), built once from the
config and then called on every batch.

    loss_fn = PreferenceLoss.from_config(args)          # or PreferenceLoss("adadpo", beta=0.1, adadpo_clip=2.0)
    loss_fn = PreferenceLoss(["sigmoid", "bco_pair", "sft"], weights=[0.8, 0.2, 1.0], beta=0.1)   # MPO
    out = loss_fn(policy_chosen_logps=lw, policy_rejected_logps=ll, chosen_lengths=nw, rejected_lengths=nl,
                  ref_chosen_logps=rw, ref_rejected_logps=rl, training=True, gather=accelerator.gather)

It holds the registry entries, only the hyperparameters each loss reads (validated once), and its state: alpha-DPO's
running margin statistics, which a trainer saves with checkpoints through `state_dict()` / `load_state_dict()`.
Nothing looks a name up per step. `preference_loss(name, ...)` is the functional form of the same thing.

A weighted sum, as TRL 1.16 computes it: L = sum_i w_i mean(L_i). Its rewards and diagnostics (beta_w, the balance)
are the first loss's, so put the preference loss first (e.g. MPO's `sigmoid`). Pair weights (WPO's, through
`pair_log_weights`) multiply every pair's loss in every term, as TRL applies them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor

from adadpo.losses.hparams import validate_loss_hparams
from adadpo.losses.inputs import make_inputs
from adadpo.losses.normalizer import AlphaMarginNormalizer
from adadpo.losses.specs import ALL_SPECS
from adadpo.losses.types import LossOutput, LossSpec, PreferenceInputs


LOSS_SPECS: dict[str, LossSpec] = {spec.name: spec for spec in sorted(ALL_SPECS, key=lambda s: s.name)}
LOSSES: tuple[str, ...] = tuple(LOSS_SPECS)
REFERENCE_FREE_LOSSES: tuple[str, ...] = tuple(n for n, s in LOSS_SPECS.items() if not s.needs_reference)
# Other names of a registered loss: one implementation each (TRL calls DPO `sigmoid`).
LOSS_ALIASES: dict[str, str] = {"sigmoid": "dpo"}


def get_loss_spec(name: str) -> LossSpec:
    """The registry entry for `name` (or its alias); unknown names raise a ValueError listing every loss."""
    spec = LOSS_SPECS.get(LOSS_ALIASES.get(name, name))
    if spec is None:
        names = ", ".join([*LOSSES, *(f"{alias} (= {name})" for alias, name in LOSS_ALIASES.items())])
        raise ValueError(f"unknown loss {name!r} (`loss_type`); registered losses are: {names}")
    return spec


class PreferenceLoss:
    """The loss `name` (or the sum of the losses `name` lists, with `weights`, default 1 each) with its
    hyperparameters (config field names; unknown ones raise, missing ones take their defaults, ones a loss does not
    read are not passed to it) and, for alpha-DPO, its margin normalizer (a new one from `alpha_dpo_momentum` unless
    `margin_normalizer` is given)."""

    def __init__(
        self,
        name: str | Sequence[str],
        *,
        weights: Sequence[float] | None = None,
        margin_normalizer: AlphaMarginNormalizer | None = None,
        **hparams: Any,
    ):
        names = [name] if isinstance(name, str) else list(name)
        weights = [1.0] * len(names) if weights is None else [float(w) for w in weights]
        if not names or len(weights) != len(names):
            raise ValueError(f"`loss_weights` needs one weight per loss: {len(weights)} for {names}.")
        self.specs = tuple(get_loss_spec(n) for n in names)
        self.weights = tuple(weights)
        resolved = validate_loss_hparams(hparams)
        problems = [problem for spec in self.specs if spec.check and (problem := spec.check(resolved))]
        if problems:
            raise ValueError("; ".join(problems))
        self.component_hparams = tuple(
            {k: resolved[k] for k in spec.hparams if k not in spec.state_hparams} for spec in self.specs
        )
        self.normalizer = None
        if any(spec.needs_margin_normalizer for spec in self.specs):
            self.normalizer = margin_normalizer or AlphaMarginNormalizer(momentum=resolved["alpha_dpo_momentum"])

    @classmethod
    def from_config(cls, args) -> PreferenceLoss:
        """From an `AdaDPOConfig` (its `loss_names`, `loss_weights` and `loss_hparams`)."""
        return cls(args.loss_names, weights=args.loss_weights, **args.loss_hparams)

    @property
    def spec(self) -> LossSpec:
        """The first loss: the one whose rewards and diagnostics are reported."""
        return self.specs[0]

    @property
    def hparams(self) -> dict[str, Any]:
        """The first loss's hyperparameters (for a sum, each term's are in `component_hparams`)."""
        return self.component_hparams[0]

    @property
    def name(self) -> str:
        return "+".join(spec.name for spec in self.specs)

    @property
    def needs_reference(self) -> bool:
        return any(spec.needs_reference for spec in self.specs)

    @property
    def needs_reward_margin(self) -> bool:
        return any(spec.needs_reward_margin for spec in self.specs)

    def identity_losses(self, chosen_lengths: Tensor, rejected_lengths: Tensor) -> Tensor | None:
        """The per-pair loss when the policy is the reference, where every term states it; else None."""
        if any(spec.identity_loss is None for spec in self.specs):
            return None
        terms = zip(self.specs, self.weights, self.component_hparams, strict=True)
        return sum(w * spec.identity_loss(hp, chosen_lengths, rejected_lengths) for spec, w, hp in terms)

    def identity_beta_w(self) -> float | None:
        """beta_w of the reported (first) loss when the policy is the reference, where its hyperparameters fix it."""
        return self.spec.identity_beta_w(self.hparams) if self.spec.identity_beta_w is not None else None

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
        outputs = []
        for spec, hparams in zip(self.specs, self.component_hparams, strict=True):
            kwargs = dict(hparams)
            if spec.needs_margin_normalizer:
                kwargs["normalize"] = partial(self.normalizer.normalize, gather=gather, update=training)
            outputs.append(spec.fn(inputs, **kwargs))
        first = outputs[0]
        losses = sum(w * out.losses for w, out in zip(self.weights, outputs, strict=True))
        if inputs.pair_log_weights is not None:
            losses = losses * torch.exp(inputs.pair_log_weights)
        return LossOutput(losses, first.chosen_rewards, first.rejected_rewards, first.metrics)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep (plain JSON values): alpha-DPO's statistics, else nothing."""
        return {} if self.normalizer is None else {"margin_normalizer": self.normalizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.normalizer is not None and state.get("margin_normalizer") is not None:
            self.normalizer.load_state_dict(state["margin_normalizer"])

    def __repr__(self) -> str:
        terms = ", ".join(
            f"{w:g} x {s.name}{hp}" for s, w, hp in zip(self.specs, self.weights, self.component_hparams)
        )
        return f"PreferenceLoss({terms})"
