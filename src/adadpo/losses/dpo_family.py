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

from adadpo.losses.heads import SQUARE, sigmoid_head
from adadpo.losses.pairwise import PairTerms, pair_loss
from adadpo.losses.types import LossOutput, PreferenceInputs


F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


# The largest (alpha - 1) x whose exp stays representable once cast back, per dtype (TRL 1.16's values).
ALPHA_DIVERGENCE_CLAMP = {torch.float16: 11.0, torch.bfloat16: 80.0, torch.float32: 80.0}


def f_divergence_score(x: Tensor, kind: str, alpha: float) -> tuple[Tensor, Tensor]:
    """The score a = f'(t) of the log-ratio x = log t for DPO under an f-divergence (Wang et al. 2023, "Beyond
    Reverse KL", arXiv 2309.16240), as TRL 1.16 computes it, and log(da/dx) (detached):

        reverse_kl        a = x                              (DPO)
        forward_kl        a = 1 - exp(-x)                    da/dx = exp(-x)
        js_divergence     a = log 2 + log sigma(x)           da/dx = sigma(-x)
        alpha_divergence  a = (exp((alpha-1) x) - 1)/(alpha-1), da/dx = exp((alpha-1) x); alpha = 1 is reverse_kl
                          (TRL clamps (alpha-1) x before the exp, at 11 in float16 and 80 otherwise, as here;
                          where the clamp binds the score is constant, and the reported log-slope is the clamp's)
    """
    if kind == "reverse_kl" or (kind == "alpha_divergence" and abs(alpha - 1.0) < 1e-6):
        return x, torch.zeros_like(x.detach())
    if kind == "forward_kl":
        return 1 - torch.exp(-x), -x.detach()
    if kind == "js_divergence":
        return math.log(2) + F.logsigmoid(x), F.logsigmoid(-x.detach())
    if kind == "alpha_divergence":
        wide = x.to(torch.promote_types(x.dtype, torch.float32))  # exp in at least float32, as TRL
        t = torch.clamp((alpha - 1.0) * wide, max=ALPHA_DIVERGENCE_CLAMP.get(x.dtype, 80.0))
        return ((torch.exp(t) - 1.0).to(x.dtype) / (alpha - 1.0)), t.detach().to(x.dtype)
    raise ValueError(f"f_divergence_type must be one of {list(F_DIVERGENCES)}, got {kind!r}")


def log_ratio_terms(
    inputs: PreferenceInputs, f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 1.0
) -> PairTerms:
    """a = f'(l - r) per `f_divergence_score` (DPO's a = x = l - r, da/dl = 1, by default)."""
    a_w, log_slope_w = f_divergence_score(
        inputs.policy_chosen_logps - inputs.ref_chosen_logps, f_divergence_type, f_alpha_divergence_coef
    )
    a_l, log_slope_l = f_divergence_score(
        inputs.policy_rejected_logps - inputs.ref_rejected_logps, f_divergence_type, f_alpha_divergence_coef
    )
    return PairTerms(score_w=a_w, score_l=a_l, log_slope_w=log_slope_w, log_slope_l=log_slope_l)


def length_normalized_terms(inputs: PreferenceInputs, base: PairTerms) -> PairTerms:
    """a / |y| (da/dl picks up 1/|y|): IPO's and sigmoid_norm's per-token scores."""
    nw, nl = inputs.chosen_lengths, inputs.rejected_lengths
    return replace(
        base,
        score_w=base.score_w / nw,
        score_l=base.score_l / nl,
        log_slope_w=base.log_slope_w - torch.log(nw),
        log_slope_l=base.log_slope_l - torch.log(nl),
    )


def ipo_terms(inputs: PreferenceInputs, beta: float, base: PairTerms | None = None) -> PairTerms:
    """a = x / |y| (da/dl = 1/|y|), target margin 1/(2 beta)."""
    return replace(length_normalized_terms(inputs, base or log_ratio_terms(inputs)), margin=1.0 / (2.0 * beta))


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


def dpo_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    label_smoothing: float,
    f_divergence_type: str,
    f_alpha_divergence_coef: float,
) -> LossOutput:
    """DPO (TRL's `sigmoid`):  L = -log sigma(beta [(lw - rw) - (ll - rl)]).

    Direct Preference Optimization: Your Language Model is Secretly a Reward Model (arXiv 2305.18290).
    label_smoothing e > 0: conservative DPO, -(1-e) log sigma(z) - e log sigma(-z) (the DPO authors' note on noisy
    preferences). f_divergence_type: the log-ratio scores of `f_divergence_score` (arXiv 2309.16240).
    """
    terms = log_ratio_terms(inputs, f_divergence_type, f_alpha_divergence_coef)
    return pair_loss(inputs, terms, beta_l=beta, head=sigmoid_head(label_smoothing))


def ipo_loss(
    inputs: PreferenceInputs, *, beta: float, f_divergence_type: str, f_alpha_divergence_coef: float
) -> LossOutput:
    """IPO, length-normalized as in TRL:  L = ((lw - rw)/|yw| - (ll - rl)/|yl| - 1/(2 beta))^2  (beta plays tau).

    The coefficient on each log-ratio is 1 (reported as beta_w = beta_l = 1).
    A General Theoretical Paradigm to Understand Learning from Human Preferences (arXiv 2310.12036).
    """
    base = log_ratio_terms(inputs, f_divergence_type, f_alpha_divergence_coef)
    return pair_loss(inputs, ipo_terms(inputs, beta, base), beta_l=1.0, head=SQUARE)


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
