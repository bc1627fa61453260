"""The one shape every loss here shares, and its closed-form gradient balance.

Each loss is written as
    z = beta_w * a_w - beta_l * a_l - m,      L = w * f(z) + nll(lw)
with a "score" a(l) of the summed policy log-prob l (lw - rw for DPO, lw/|yw| for SimPO, ORPO's log-odds ...),
a detached margin m, a detached pair weight w (MADPO's w(h_rm), ORPO's lambda), a head f (`adadpo.losses.heads`:
-log sigma(z) for DPO, z^2 for IPO, hinge, robust, EXO, DiscoPOP, conservative DPO) and an optional NLL term on the
chosen response (CPO, ORPO, SimPO's sft_weight). Base losses use beta_w = beta_l; the Ada- variants differ only in
the stop-gradient beta_w.

Closed-form gradients (no autograd call), with s = da/dl:
    dL/dlw = -(w |f'(z)| beta_w s_w + |dnll/dlw|),   dL/dll = w |f'(z)| beta_l s_l
and dL/dP = dL/dlog P / P, so the policy-space balance is
    |dL/dP_w| / |dL/dP_l| = |dL/dlw| / |dL/dll| * P_l / P_w,
computed in log space (`grad_balance`). `token_grad_balance` is the same ratio per token at the geometric-mean
token quantity q = (P/P_ref)^(1/|y|) (P^(1/|y|) for reference-free losses): |dL/dlw| / |dL/dll| * q_l / q_w.
Only the sigmoid head keeps |f'(z)| (its losses may add an NLL term); for the others the common factor cancels, so
where f' vanishes (IPO at z = 0, hinge past its margin) the limit is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from adadpo.losses.heads import SIGMOID, Head
from adadpo.losses.numerics import LOG_BALANCE_CAP, saturated_exp
from adadpo.losses.types import LossOutput, PreferenceInputs


@dataclass(frozen=True)
class PairTerms:
    """The loss-specific pieces of `z = beta_w * a_w - beta_l * a_l - m; L = w * f(z) + nll`.

    score_w, score_l:          a_w, a_l, differentiable in the policy logps.
    log_slope_w, log_slope_l:  log(da/dl) per pair, detached (0 when a = l - r, -log|y| when a = l/|y|).
    margin:                    m, detached, float or (B,).
    pair_weight:               w >= 0, detached, float or (B,).
    nll, log_nll_slope:        the NLL term (differentiable, depends on lw only) and log|d nll / d lw|.
    extra_metrics:             loss-specific detached (B,) diagnostics.
    """

    score_w: Tensor
    score_l: Tensor
    log_slope_w: Tensor
    log_slope_l: Tensor
    margin: Tensor | float = 0.0
    pair_weight: Tensor | float = 1.0
    nll: Tensor | float = 0.0
    log_nll_slope: Tensor | float = -math.inf
    extra_metrics: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class AdaptiveCoefficient:
    """log(beta_w / beta_l) as applied (scaled, clipped, capped; detached) and where the clip bound."""

    log_ratio: Tensor
    clipped: Tensor


def _log_mean_token_ratio(inputs: PreferenceInputs) -> Tensor:
    """log(q_l / q_w) at the geometric-mean token: q = (P/P_ref)^(1/|y|) with a reference, P^(1/|y|) without.

    Each token t of y_w gets dL/dq_t = dL/dlw / q_t; at q_t = q_w this turns the summed-logp gradient ratio into
    the per-token balance that Stable AdaDPO equalises (1 when unclipped), and that DPO lets fall below 1.
    """
    log_w, log_l = inputs.policy_chosen_logps.detach(), inputs.policy_rejected_logps.detach()
    if inputs.ref_chosen_logps is not None:
        log_w, log_l = log_w - inputs.ref_chosen_logps, log_l - inputs.ref_rejected_logps
    return log_l / inputs.rejected_lengths - log_w / inputs.chosen_lengths


def pair_loss(
    inputs: PreferenceInputs,
    terms: PairTerms,
    *,
    beta_l: float,
    head: Head = SIGMOID,
    coefficient: AdaptiveCoefficient | None = None,
) -> LossOutput:
    """Assemble the per-pair loss, rewards and metrics from `terms` with beta_w = beta_l * exp(log_ratio)."""
    ref = inputs.policy_chosen_logps.detach()
    if coefficient is None:
        log_ratio = torch.zeros_like(ref)
        clipped = torch.zeros_like(ref, dtype=torch.bool)
    else:
        log_ratio, clipped = coefficient.log_ratio.detach(), coefficient.clipped
    log_beta_w = math.log(beta_l) + log_ratio
    beta_w = beta_l * torch.exp(log_ratio)
    margin = torch.as_tensor(terms.margin, dtype=ref.dtype, device=ref.device)
    weight = torch.as_tensor(terms.pair_weight, dtype=ref.dtype, device=ref.device)

    z = beta_w * terms.score_w - beta_l * terms.score_l - margin
    losses = weight * head.value(z) + terms.nll
    if head.log_abs_slope is None:
        if not isinstance(terms.nll, float) or terms.nll != 0.0:
            raise ValueError(f"the {head.name} head takes no NLL term (its |f'(z)| is cancelled in the balance)")
        log_abs_fprime = torch.log(weight).expand_as(ref)
    else:
        log_abs_fprime = head.log_abs_slope(z.detach()) + torch.log(weight)

    log_nll_slope = torch.as_tensor(terms.log_nll_slope, dtype=ref.dtype, device=ref.device)
    log_grad_w = torch.logaddexp(log_abs_fprime + log_beta_w + terms.log_slope_w, log_nll_slope)
    log_grad_l = log_abs_fprime + math.log(beta_l) + terms.log_slope_l
    return LossOutput(
        losses=losses,
        chosen_rewards=(beta_w * terms.score_w).detach(),
        rejected_rewards=(beta_l * terms.score_l).detach(),
        metrics={
            "beta_w": beta_w,
            "beta_l": torch.full_like(ref, beta_l),
            "clipped": clipped,
            **balance_metrics(inputs, log_grad_w, log_grad_l),
            **{k: v.detach() for k, v in terms.extra_metrics.items()},
        },
    )


def balance_metrics(inputs: PreferenceInputs, log_grad_w: Tensor, log_grad_l: Tensor) -> dict[str, Tensor]:
    """`grad_balance` (|dL/dP_w| / |dL/dP_l|, saturated), its log, and `token_grad_balance`, from log|dL/dlw| and
    log|dL/dll| (see the module docstring)."""
    log_grad_balance = log_grad_w - log_grad_l + (inputs.policy_rejected_logps - inputs.policy_chosen_logps).detach()
    log_token_grad_balance = log_grad_w - log_grad_l + _log_mean_token_ratio(inputs)
    return {
        "grad_balance": saturated_exp(log_grad_balance, LOG_BALANCE_CAP),
        "log_grad_balance": log_grad_balance,
        "token_grad_balance": saturated_exp(log_token_grad_balance, LOG_BALANCE_CAP),
    }
