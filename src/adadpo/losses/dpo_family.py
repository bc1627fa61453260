"""Reference-based losses on the log-ratio x = log(P / P_ref): DPO, IPO, R-DPO and MADPO.

Notation: lw, ll policy summed logps; rw, rl reference summed logps; |yw|, |yl| completion lengths;
x_w = lw - rw, x_l = ll - rl; sg = stop-gradient.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from adadpo.losses.pairwise import PairTerms, pair_loss
from adadpo.losses.types import LossOutput, PreferenceInputs


def log_ratio_terms(inputs: PreferenceInputs) -> PairTerms:
    """a = x = l - r (so da/dl = 1): the DPO scores."""
    x_w = inputs.policy_chosen_logps - inputs.ref_chosen_logps
    x_l = inputs.policy_rejected_logps - inputs.ref_rejected_logps
    zeros = torch.zeros_like(x_w.detach())
    return PairTerms(score_w=x_w, score_l=x_l, log_slope_w=zeros, log_slope_l=zeros)


def ipo_terms(inputs: PreferenceInputs, beta: float) -> PairTerms:
    """a = x / |y| (da/dl = 1/|y|), target margin 1/(2 beta)."""
    nw, nl = inputs.chosen_lengths, inputs.rejected_lengths
    base = log_ratio_terms(inputs)
    return PairTerms(
        score_w=base.score_w / nw,
        score_l=base.score_l / nl,
        log_slope_w=-torch.log(nw),
        log_slope_l=-torch.log(nl),
        margin=1.0 / (2.0 * beta),
    )


def rdpo_terms(inputs: PreferenceInputs, rdpo_alpha: float) -> PairTerms:
    """DPO scores plus alpha * (|yw| - |yl|) inside the sigmoid (margin m = -alpha (|yw| - |yl|)), per pair.

    Park et al.'s sign: the length penalty r - alpha |y| makes the implicit reward beta x + alpha |y|, so a longer
    chosen answer already earns alpha per extra token and its log-ratio is pushed up less (docs/losses.md, R-DPO).
    """
    return replace(log_ratio_terms(inputs), margin=-rdpo_alpha * (inputs.chosen_lengths - inputs.rejected_lengths))


def madpo_weight(reward_margins: Tensor, *, c_max: float, c_min: float, lam: float, tau: float) -> Tensor:
    """MADPO's per-pair weight w(h), h = r(x, y_w) - r(x, y_l) from a reward model (arXiv 2510.05342).

        c(h) = c_min + (c_max - c_min) / (1 + (c_max - 1)/(1 - c_min) * exp(lam * (|h| - tau)))
        w(h) = sigma(c(h) * h) / sigma(h)   if h > -tau,   else 1

    c(h) > 1 for hard pairs (|h| < tau) and < 1 for easy ones (|h| > tau), c(tau) = 1. Since the population
    optimum of the weighted loss has sigma(beta * h_theta) = sigma(c(h) * h), the weight sets an effective target
    margin c(h) * h: amplified for hard pairs, dampened for easy ones. Transcribed from the author's reference
    code; the inner fraction is evaluated as a sigmoid so exp never overflows and c_max = 1 gives c = 1.
    """
    h = reward_margins
    log_k = math.log(c_max - 1.0) - math.log(1.0 - c_min) if c_max > 1.0 else -math.inf
    c = c_min + (c_max - c_min) * torch.sigmoid(-(lam * (h.abs() - tau) + log_k))
    ratio = torch.exp(F.logsigmoid(c * h) - F.logsigmoid(h))
    return torch.where(h > -tau, ratio, torch.ones_like(ratio))


def dpo_loss(inputs: PreferenceInputs, *, beta: float) -> LossOutput:
    """DPO:  L = -log sigma(beta [(lw - rw) - (ll - rl)]).

    Direct Preference Optimization: Your Language Model is Secretly a Reward Model (arXiv 2305.18290).
    """
    return pair_loss(inputs, log_ratio_terms(inputs), beta_l=beta)


def ipo_loss(inputs: PreferenceInputs, *, beta: float) -> LossOutput:
    """IPO, length-normalized as in TRL:  L = ((lw - rw)/|yw| - (ll - rl)/|yl| - 1/(2 beta))^2  (beta plays tau).

    The coefficient on each log-ratio is 1 (reported as beta_w = beta_l = 1).
    A General Theoretical Paradigm to Understand Learning from Human Preferences (arXiv 2310.12036).
    """
    return pair_loss(inputs, ipo_terms(inputs, beta), beta_l=1.0, head="square")


def rdpo_loss(inputs: PreferenceInputs, *, beta: float, rdpo_alpha: float) -> LossOutput:
    """R-DPO:  L = -log sigma(beta [(lw - rw) - (ll - rl)] + alpha (|yw| - |yl|)),  alpha = rdpo_alpha.

    Disentangling Length from Quality in Direct Preference Optimization (arXiv 2403.19159), with the paper's sign
    (the AdaDPO and alpha-DPO baseline tables print "- alpha (|yw| - |yl|)"; see docs/losses.md).
    """
    return pair_loss(inputs, rdpo_terms(inputs, rdpo_alpha), beta_l=beta)


def madpo_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    madpo_c_max: float,
    madpo_c_min: float,
    madpo_lambda: float,
    madpo_tau: float,
) -> LossOutput:
    """MADPO:  L = -w(h_rm) log sigma(beta [(lw - rw) - (ll - rl)]),  w from `madpo_weight`, h_rm per pair.

    Margin Adaptive DPO: Leveraging Reward Model for Granular Control in Preference Optimization (arXiv 2510.05342).
    """
    weight = madpo_weight(
        inputs.reward_margins, c_max=madpo_c_max, c_min=madpo_c_min, lam=madpo_lambda, tau=madpo_tau
    ).detach()
    terms = replace(log_ratio_terms(inputs), pair_weight=weight, extra_metrics={"madpo_weight": weight})
    return pair_loss(inputs, terms, beta_l=beta)


# ---- Step 0 (policy == reference): every log-ratio is 0 ---------------------------------------------------------------


def dpo_identity_loss(hparams: dict, chosen_lengths: Tensor, rejected_lengths: Tensor) -> Tensor:
    """-log sigma(0) = ln 2 per pair, whatever beta (and whatever an Ada- variant's beta_w multiplies: 0)."""
    return torch.full(chosen_lengths.shape, math.log(2.0), dtype=torch.float32, device=chosen_lengths.device)


def ipo_identity_loss(hparams: dict, chosen_lengths: Tensor, rejected_lengths: Tensor) -> Tensor:
    """(0 - 1/(2 beta))^2 = 1/(4 beta^2) per pair."""
    value = 1 / (4 * hparams["beta"] ** 2)
    return torch.full(chosen_lengths.shape, value, dtype=torch.float32, device=chosen_lengths.device)


def rdpo_identity_loss(hparams: dict, chosen_lengths: Tensor, rejected_lengths: Tensor) -> Tensor:
    """The length term alone: -log sigma(alpha (|yw| - |yl|))."""
    return -F.logsigmoid(hparams["rdpo_alpha"] * (chosen_lengths - rejected_lengths).float())
