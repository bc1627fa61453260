"""Losses on policy log-probabilities: SimPO, CPO, ORPO (reference-free) and alpha-DPO (SimPO + adaptive margin).

Notation: lw, ll policy summed logps; rw, rl reference summed logps; |yw|, |yl| completion lengths; sg = detach.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from adadpo.losses.numerics import log_odds_of_mean_logp, per_token
from adadpo.losses.pairwise import PairTerms, pair_loss
from adadpo.losses.types import LossOutput, PreferenceInputs


def chosen_nll(inputs: PreferenceInputs, weight: float, nll_average: str) -> tuple[Tensor | float, Tensor | float]:
    """weight * the chosen response's NLL per token, per pair, and log|d/dlw|; `nll_average` picks the denominator.

    "batch" (default): -lw / mean_batch(|yw|), whose mean over the B pairs is the token average over the micro-batch,
    sum(-lw) / sum(|yw|), as TRL's CPO/ORPO and the official SimPO trainer compute it (a cross-entropy over all
    chosen completion tokens). "pair": -lw / |yw|, each pair's own token average, then the mean over pairs.
    The two agree when every chosen answer in the batch has the same length.
    """
    if weight == 0.0:
        return 0.0, -math.inf
    nw = inputs.chosen_lengths
    if nll_average == "batch":
        nw = nw.mean().expand_as(nw)
    elif nll_average != "pair":
        raise ValueError(f"nll_average must be 'batch' or 'pair', got {nll_average!r}")
    return -weight * per_token(inputs.policy_chosen_logps, nw), math.log(weight) - torch.log(nw)


def mean_logp_terms(inputs: PreferenceInputs, simpo_gamma: float, sft_weight: float, nll_average: str) -> PairTerms:
    """a = l/|y| (da/dl = 1/|y|), margin gamma, optional SFT term on the chosen response."""
    nw, nl = inputs.chosen_lengths, inputs.rejected_lengths
    nll, log_nll_slope = chosen_nll(inputs, sft_weight, nll_average)
    return PairTerms(
        score_w=per_token(inputs.policy_chosen_logps, nw),
        score_l=per_token(inputs.policy_rejected_logps, nl),
        log_slope_w=-torch.log(nw),
        log_slope_l=-torch.log(nl),
        margin=simpo_gamma,
        nll=nll,
        log_nll_slope=log_nll_slope,
    )


def cpo_terms(inputs: PreferenceInputs, cpo_alpha: float, nll_average: str) -> PairTerms:
    """a = l (da/dl = 1) plus lambda * NLL(y_w) per token (`chosen_nll`)."""
    nll, log_nll_slope = chosen_nll(inputs, cpo_alpha, nll_average)
    zeros = torch.zeros_like(inputs.policy_chosen_logps.detach())
    return PairTerms(
        score_w=inputs.policy_chosen_logps,
        score_l=inputs.policy_rejected_logps,
        log_slope_w=zeros,
        log_slope_l=zeros,
        nll=nll,
        log_nll_slope=log_nll_slope,
    )


def orpo_terms(inputs: PreferenceInputs, orpo_lambda: float, nll_average: str) -> PairTerms:
    """a = logodds(p) with p = exp(l/|y|) (da/dl = 1/(|y|(1-p))), pair weight lambda, plus NLL(y_w) per token."""
    nw, nl = inputs.chosen_lengths, inputs.rejected_lengths
    odds_w, log_dodds_w = log_odds_of_mean_logp(per_token(inputs.policy_chosen_logps, nw))
    odds_l, log_dodds_l = log_odds_of_mean_logp(per_token(inputs.policy_rejected_logps, nl))
    nll, log_nll_slope = chosen_nll(inputs, 1.0, nll_average)
    return PairTerms(
        score_w=odds_w,
        score_l=odds_l,
        log_slope_w=log_dodds_w - torch.log(nw),
        log_slope_l=log_dodds_l - torch.log(nl),
        pair_weight=orpo_lambda,
        nll=nll,
        log_nll_slope=log_nll_slope,
    )


def alpha_dpo_terms(
    inputs: PreferenceInputs,
    *,
    beta: float,
    simpo_gamma: float,
    alpha_dpo_alpha: float,
    normalize: Callable[[Tensor], Tensor],
) -> PairTerms:
    """SimPO scores with margin sg(gamma + alpha * M*), M = beta [(lw - rw)/|yw| - (ll - rl)/|yl|], M* = normalize(M)."""
    nw, nl = inputs.chosen_lengths, inputs.rejected_lengths
    with torch.no_grad():
        raw = beta * (
            per_token(inputs.policy_chosen_logps - inputs.ref_chosen_logps, nw)
            - per_token(inputs.policy_rejected_logps - inputs.ref_rejected_logps, nl)
        )
        normalized = normalize(raw).detach()
    return replace(
        mean_logp_terms(inputs, simpo_gamma, 0.0, "pair"),  # no SFT term: the average is unused
        margin=simpo_gamma + alpha_dpo_alpha * normalized,
        extra_metrics={"alpha_margin": raw, "alpha_margin_normalized": normalized},
    )


def simpo_loss(
    inputs: PreferenceInputs, *, beta: float, simpo_gamma: float, sft_weight: float, nll_average: str
) -> LossOutput:
    """SimPO:  L = -log sigma(beta lw/|yw| - beta ll/|yl| - gamma) + sft_weight * (-lw/mean_batch(|yw|)).

    The SFT term is the token average over the micro-batch ("batch", the official trainer's) or -lw/|yw| ("pair").
    SimPO: Simple Preference Optimization with a Reference-Free Reward (arXiv 2405.14734).
    """
    return pair_loss(inputs, mean_logp_terms(inputs, simpo_gamma, sft_weight, nll_average), beta_l=beta)


def cpo_loss(inputs: PreferenceInputs, *, beta: float, cpo_alpha: float, nll_average: str) -> LossOutput:
    """CPO:  L = -log sigma(beta (lw - ll)) + lambda * (-lw/mean_batch(|yw|)),  lambda = cpo_alpha.

    The NLL is the token average over the micro-batch ("batch", as TRL) or -lw/|yw| ("pair").
    Contrastive Preference Optimization: Pushing the Boundaries of LLM Performance in Machine Translation
    (arXiv 2401.08417).
    """
    return pair_loss(inputs, cpo_terms(inputs, cpo_alpha, nll_average), beta_l=beta)


def orpo_loss(inputs: PreferenceInputs, *, beta: float, orpo_lambda: float, nll_average: str) -> LossOutput:
    """ORPO:  L = -lw/mean_batch(|yw|) + lambda * (-log sigma(beta (logodds_w - logodds_l))),

    logodds = log p - log(1 - p), p = exp(l/|y|) the mean-token probability, via log(-expm1) (finite as p -> 1).
    The NLL is on the completion only (TRL adds the prompt tokens), token-averaged over the micro-batch ("batch")
    or per pair ("pair"). TRL's ORPO `beta` is lambda here; beta = 1 is the paper's odds-ratio term.
    ORPO: Monolithic Preference Optimization without Reference Model (arXiv 2403.07691).
    """
    return pair_loss(inputs, orpo_terms(inputs, orpo_lambda, nll_average), beta_l=beta)


def alpha_dpo_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    simpo_gamma: float,
    alpha_dpo_alpha: float,
    normalize: Callable[[Tensor], Tensor],
) -> LossOutput:
    """alpha-DPO (eq. 12):  L = -log sigma(u - sg(gamma + alpha * M*)),  u = beta lw/|yw| - beta ll/|yl|,

    M = beta [(lw - rw)/|yw| - (ll - rl)/|yl|], M* = (M - mu)/sigma with running statistics kept by
    `AlphaMarginNormalizer` (passed in as `normalize`); alpha is `alpha_dpo_alpha`. alpha = 0 gives SimPO exactly.
    alpha-DPO: Adaptive Reward Margin is What Direct Preference Optimization Needs (arXiv 2410.10148).
    """
    terms = alpha_dpo_terms(
        inputs, beta=beta, simpo_gamma=simpo_gamma, alpha_dpo_alpha=alpha_dpo_alpha, normalize=normalize
    )
    return pair_loss(inputs, terms, beta_l=beta)
