"""Plain data types shared by every loss: the inputs, the output and the registry entry."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor


@dataclass(frozen=True)
class PreferenceInputs:
    """One batch of B preference pairs, already validated and cast to a float dtype (at least float32).

    `*_logps` are summed log-probabilities of the completion tokens, `*_lengths` completion token counts (>= 1).
    `reward_margins` is MADPO's per-pair h_rm = r(x, y_w) - r(x, y_l) from a reward model. `pair_log_weights` is
    the log of a detached weight on each pair's loss (WPO's log w_w + log w_l, from the trainer's forward).
    """

    policy_chosen_logps: Tensor
    policy_rejected_logps: Tensor
    chosen_lengths: Tensor
    rejected_lengths: Tensor
    ref_chosen_logps: Tensor | None = None
    ref_rejected_logps: Tensor | None = None
    reward_margins: Tensor | None = None
    pair_log_weights: Tensor | None = None


@dataclass
class LossOutput:
    """What every loss returns.

    losses:            (B,) per-pair loss, differentiable w.r.t. the policy logps (reduce it yourself).
    chosen_rewards:    (B,) detached `beta_w * a_w`, where a_w is the loss's chosen score (e.g. lw - rw for DPO),
                       i.e. the implicit reward with the coefficient actually applied.
    rejected_rewards:  (B,) detached `beta_l * a_l`.
    metrics:           detached per-pair (B,) diagnostics; always `beta_w`, `beta_l`, `clipped`, `grad_balance`
                       and `log_grad_balance` (see docs/losses.md), plus loss-specific extras.
    """

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


# The per-pair diagnostics every loss returns (`adadpo.losses.pairwise.pair_loss`) that a trainer gathers and logs.
PAIR_METRICS = ("beta_w", "clipped", "log_grad_balance", "token_grad_balance")
# Keyword arguments a loss function receives that are not hyperparameters (alpha-DPO's normaliser, bound per call).
INJECTED_ARGUMENTS = ("normalize",)


@dataclass(frozen=True)
class LossSpec:
    """A registry entry: the loss function and every fact about the loss that other packages ask.

    needs_reference:      the loss compares the policy with a reference model (loads or precomputes one).
    needs_reward_margin:  it reads a per-pair reward margin column (MADPO).
    state_hparams:        hyperparameters of the loss's state rather than its function (alpha-DPO's normaliser).
    base:                 for an Ada- variant, the loss it balances (plots pair them; docs compare them).
    identity_loss:        (hparams, chosen_lengths, rejected_lengths) -> the per-pair loss when the policy equals the
                          reference (step 0), where it has a closed form; checked by preflight.
    identity_beta_w:      hparams -> beta_w at step 0 where the hyperparameters determine it, else None.
    log_ratio_rewards:    rewards are beta x log-ratios, so the reward margins are 0 at step 0.
    logged_metrics:       the per-pair diagnostics of `LossOutput.metrics` a trainer logs.
    check:                hparams -> what is wrong with them for this loss (beyond each value's own range), or None.
    """

    name: str
    fn: Callable[..., LossOutput]
    needs_reference: bool
    formula: str = ""
    paper: str = ""
    needs_reward_margin: bool = False
    needs_margin_normalizer: bool = False
    state_hparams: tuple[str, ...] = ()
    base: str | None = None
    identity_loss: Callable[[dict, Tensor, Tensor], Tensor] | None = None
    identity_beta_w: Callable[[dict], float | None] | None = None
    log_ratio_rewards: bool = False
    logged_metrics: tuple[str, ...] = PAIR_METRICS
    check: Callable[[dict], str | None] | None = None

    @property
    def hparams(self) -> tuple[str, ...]:
        """The hyperparameters this loss reads: its function's keyword arguments, then its state's."""
        parameters = inspect.signature(self.fn).parameters.values()
        keywords = [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in INJECTED_ARGUMENTS]
        return (*keywords, *self.state_hparams)
