"""AdaDPO and the self-adaptive (Ada-) counterparts of paper Table 2.

Each is its base loss with beta_l = beta (1 for IPO) and the stop-gradient beta_w of `balance.adaptive_coefficient`:
    beta_w / beta_l = min(k * sg((s_l/s_w) * Q_w/Q_l), C)                  (adadpo_length_normalize=False)
    beta_w / beta_l = min(k * sg((s_l/s_w) * Q_w^(1/|yw|) / Q_l^(1/|yl|)), C)   (True: the Stable, per-token form)
with Q = P (policy balance) or P/P_ref (ratio balance), s = da/dl of the base loss's score. Derivations per loss
are in docs/losses.md. Reference-free bases balance in policy space (there is no ratio to balance).
AdaDPO: Self-Adaptive Direct Preference Optimization with Balanced Gradient Updates (arXiv 2605.28440).
"""

from __future__ import annotations

import math

from adadpo.losses.balance import adaptive_coefficient, balance_space
from adadpo.losses.dpo_family import ipo_terms, length_normalized_terms, log_ratio_terms, rdpo_terms
from adadpo.losses.heads import HINGE, SIGMOID, SQUARE, Head, discopop_head, exo_head, robust_head, sigmoid_head
from adadpo.losses.pairwise import PairTerms, pair_loss
from adadpo.losses.simpo_family import cpo_terms, mean_logp_terms, orpo_terms
from adadpo.losses.types import LossOutput, PreferenceInputs


def _adaptive_loss(
    inputs: PreferenceInputs,
    terms: PairTerms,
    *,
    balance: str,
    beta_l: float,
    length_normalize: bool,
    scale: float,
    clip: float | None,
    head: Head = SIGMOID,
) -> LossOutput:
    coefficient = adaptive_coefficient(
        inputs, terms, balance_space(inputs, balance), length_normalize=length_normalize, scale=scale, clip=clip
    )
    return pair_loss(inputs, terms, beta_l=beta_l, head=head, coefficient=coefficient)


def adadpo_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    adadpo_clip: float | None,
    adadpo_length_normalize: bool,
    adadpo_balance: str,
    adadpo_scale: float,
    label_smoothing: float,
    f_divergence_type: str,
    f_alpha_divergence_coef: float,
) -> LossOutput:
    """AdaDPO:  L = -log sigma(beta_w (lw - rw) - beta (ll - rl)),  beta_l = beta.

    Default (Stable AdaDPO, Listing 1): log_ratio = sg((lw-rw)/|yw| - (ll-rl)/|yl|), beta_w = beta min(exp(log_ratio), C).
    adadpo_length_normalize=False: eq. (6), beta_w = beta k sg(R_w/R_l) ("ratio", eq. 5) or beta k sg(P_w/P_l)
    ("policy", eq. 4), clipped at C. label_smoothing and f_divergence_type as in `dpo_loss`: both responses keep one
    f'(z), and an f-divergence score's slope enters the balance as s = da/dl.
    """
    return _adaptive_loss(
        inputs,
        log_ratio_terms(inputs, f_divergence_type, f_alpha_divergence_coef),
        balance=adadpo_balance,
        beta_l=beta,
        length_normalize=adadpo_length_normalize,
        scale=adadpo_scale,
        clip=adadpo_clip,
        head=sigmoid_head(label_smoothing),
    )


def ada_ipo_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    adadpo_clip: float | None,
    adadpo_length_normalize: bool,
    adadpo_balance: str,
    adadpo_scale: float,
    f_divergence_type: str,
    f_alpha_divergence_coef: float,
) -> LossOutput:
    """AdaIPO:  L = (beta_w (lw-rw)/|yw| - (ll-rl)/|yl| - 1/(2 beta))^2,  beta_l = 1,

    beta_w = sg(|yw| R_w / (|yl| R_l)) (Table 2's sg(x_w/x_l) plus the length factor of the normalized IPO);
    Stable: sg((|yw|/|yl|) R_w^(1/|yw|) / R_l^(1/|yl|)). R = P/P_ref ("ratio") or P ("policy").
    """
    return _adaptive_loss(
        inputs,
        ipo_terms(inputs, beta, log_ratio_terms(inputs, f_divergence_type, f_alpha_divergence_coef)),
        balance=adadpo_balance,
        beta_l=1.0,
        length_normalize=adadpo_length_normalize,
        scale=adadpo_scale,
        clip=adadpo_clip,
        head=SQUARE,
    )


def ada_rdpo_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    rdpo_alpha: float,
    adadpo_clip: float | None,
    adadpo_length_normalize: bool,
    adadpo_balance: str,
    adadpo_scale: float,
) -> LossOutput:
    """AdaR-DPO:  L = -log sigma(beta_w (lw - rw) - beta (ll - rl) + alpha (|yw| - |yl|)),  beta_w as in AdaDPO.

    R-DPO's sign (Park et al., arXiv 2403.19159); the length term is policy-independent, so the balance is AdaDPO's.
    """
    return _adaptive_loss(
        inputs,
        rdpo_terms(inputs, rdpo_alpha),
        balance=adadpo_balance,
        beta_l=beta,
        length_normalize=adadpo_length_normalize,
        scale=adadpo_scale,
        clip=adadpo_clip,
    )


def ada_cpo_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    cpo_alpha: float,
    nll_average: str,
    adadpo_clip: float | None,
    adadpo_length_normalize: bool,
    adadpo_scale: float,
) -> LossOutput:
    """AdaCPO:  L = -log sigma(beta_w lw - beta ll) + lambda NLL(y_w),  beta_w = beta sg(P_w/P_l), NLL as in CPO;

    Stable: beta sg(P_w^(1/|yw|) / P_l^(1/|yl|)). Balances the contrastive term (exactly so for cpo_alpha = 0).
    """
    return _adaptive_loss(
        inputs,
        cpo_terms(inputs, cpo_alpha, nll_average),
        balance="policy",
        beta_l=beta,
        length_normalize=adadpo_length_normalize,
        scale=adadpo_scale,
        clip=adadpo_clip,
    )


def ada_orpo_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    orpo_lambda: float,
    nll_average: str,
    adadpo_clip: float | None,
    adadpo_length_normalize: bool,
    adadpo_scale: float,
) -> LossOutput:
    """AdaORPO:  L = NLL(y_w) + lambda (-log sigma(beta_w logodds_w - beta logodds_l)),  p = exp(l/|y|), NLL as ORPO,

    beta_w = beta sg(|yw|(1 - p_w) P_w / (|yl|(1 - p_l) P_l)); Stable: beta sg(|yw| p_w (1 - p_w) / (|yl| p_l (1 - p_l))),
    i.e. Table 2's P(1-P) ratio at the mean-token probability times |yw|/|yl|. Balances the odds-ratio term.
    """
    return _adaptive_loss(
        inputs,
        orpo_terms(inputs, orpo_lambda, nll_average),
        balance="policy",
        beta_l=beta,
        length_normalize=adadpo_length_normalize,
        scale=adadpo_scale,
        clip=adadpo_clip,
    )


def ada_simpo_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    simpo_gamma: float,
    sft_weight: float,
    nll_average: str,
    adadpo_clip: float | None,
    adadpo_length_normalize: bool,
    adadpo_scale: float,
) -> LossOutput:
    """AdaSimPO:  L = -log sigma(beta_w lw/|yw| - beta ll/|yl| - gamma) + sft_weight NLL(y_w) (as in SimPO),

    beta_w = beta sg(|yw| P_w / (|yl| P_l)) (Table 2); Stable: beta sg((|yw|/|yl|) P_w^(1/|yw|) / P_l^(1/|yl|)).
    """
    return _adaptive_loss(
        inputs,
        mean_logp_terms(inputs, simpo_gamma, sft_weight, nll_average),
        balance="policy",
        beta_l=beta,
        length_normalize=adadpo_length_normalize,
        scale=adadpo_scale,
        clip=adadpo_clip,
    )


def exp_ratio_identity_beta_w(hparams: dict) -> float | None:
    """beta_w at step 0 for the losses whose coefficient is beta min(k sg(R_w / R_l) ..., C) (adadpo, ada_rdpo): the
    ratio balance has R_w = R_l = 1 there, so beta min(k, C). The policy balance reads P_w / P_l, which the policy
    sets: None."""
    if hparams["adadpo_balance"] == "policy":
        return None
    return hparams["beta"] * min(hparams["adadpo_scale"], hparams["adadpo_clip"] or math.inf)


# ---- Ada- versions of TRL's DPO-form loss types (adadpo.losses.trl_family) ----------------------------------------


def _ada_trl(
    inputs: PreferenceInputs,
    terms: PairTerms,
    head: Head,
    beta: float,
    adadpo_clip: float | None,
    adadpo_length_normalize: bool,
    adadpo_balance: str,
    adadpo_scale: float,
) -> LossOutput:
    return _adaptive_loss(
        inputs,
        terms,
        balance=adadpo_balance,
        beta_l=beta,
        length_normalize=adadpo_length_normalize,
        scale=adadpo_scale,
        clip=adadpo_clip,
        head=head,
    )


def ada_hinge_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    adadpo_clip: float | None,
    adadpo_length_normalize: bool,
    adadpo_balance: str,
    adadpo_scale: float,
    f_divergence_type: str,
    f_alpha_divergence_coef: float,
) -> LossOutput:
    """AdaHinge:  L = max(0, 1 - (beta_w x_w - beta x_l)),  beta_w as in AdaDPO (both sides share f'(z))."""
    terms = log_ratio_terms(inputs, f_divergence_type, f_alpha_divergence_coef)
    return _ada_trl(inputs, terms, HINGE, beta, adadpo_clip, adadpo_length_normalize, adadpo_balance, adadpo_scale)


def ada_exo_pair_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    label_smoothing: float,
    adadpo_clip: float | None,
    adadpo_length_normalize: bool,
    adadpo_balance: str,
    adadpo_scale: float,
    f_divergence_type: str,
    f_alpha_divergence_coef: float,
) -> LossOutput:
    """AdaEXO: EXO-pref's head at z = beta_w x_w - beta x_l, beta_w as in AdaDPO."""
    terms = log_ratio_terms(inputs, f_divergence_type, f_alpha_divergence_coef)
    head = exo_head(label_smoothing)
    return _ada_trl(inputs, terms, head, beta, adadpo_clip, adadpo_length_normalize, adadpo_balance, adadpo_scale)


def ada_robust_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    label_smoothing: float,
    adadpo_clip: float | None,
    adadpo_length_normalize: bool,
    adadpo_balance: str,
    adadpo_scale: float,
    f_divergence_type: str,
    f_alpha_divergence_coef: float,
) -> LossOutput:
    """AdaRobust: robust DPO's head at z = beta_w x_w - beta x_l, beta_w as in AdaDPO."""
    terms = log_ratio_terms(inputs, f_divergence_type, f_alpha_divergence_coef)
    head = robust_head(label_smoothing)
    return _ada_trl(inputs, terms, head, beta, adadpo_clip, adadpo_length_normalize, adadpo_balance, adadpo_scale)


def ada_discopop_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    discopop_tau: float,
    adadpo_clip: float | None,
    adadpo_length_normalize: bool,
    adadpo_balance: str,
    adadpo_scale: float,
    f_divergence_type: str,
    f_alpha_divergence_coef: float,
) -> LossOutput:
    """AdaDiscoPOP: DiscoPOP's head at z = beta_w x_w - beta x_l, beta_w as in AdaDPO."""
    terms = log_ratio_terms(inputs, f_divergence_type, f_alpha_divergence_coef)
    head = discopop_head(discopop_tau)
    return _ada_trl(inputs, terms, head, beta, adadpo_clip, adadpo_length_normalize, adadpo_balance, adadpo_scale)


def ada_sigmoid_norm_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    adadpo_clip: float | None,
    adadpo_length_normalize: bool,
    adadpo_balance: str,
    adadpo_scale: float,
    f_divergence_type: str,
    f_alpha_divergence_coef: float,
) -> LossOutput:
    """Ada length-normalized DPO:  L = -log sigma(beta_w x_w/|yw| - beta x_l/|yl|),  beta_w = beta sg(|yw| R_w /
    (|yl| R_l)) (the length factor as for AdaIPO); Stable: beta sg((|yw|/|yl|) R_w^(1/|yw|) / R_l^(1/|yl|))."""
    terms = length_normalized_terms(inputs, log_ratio_terms(inputs, f_divergence_type, f_alpha_divergence_coef))
    return _ada_trl(inputs, terms, SIGMOID, beta, adadpo_clip, adadpo_length_normalize, adadpo_balance, adadpo_scale)
