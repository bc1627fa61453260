"""The loss types of TRL 1.16's `DPOTrainer`, by their TRL names, equal to its `_compute_loss` in value and gradient
(tests/losses/test_losses_trl_types.py calls TRL's code). `sigmoid` is `dpo` and `ipo` is ours (adadpo.losses.dpo_family).

Two kinds:
- DPO-form, z = beta (a_w - a_l) inside one head (adadpo.losses.heads): hinge, exo_pair, robust, discopop,
  sigmoid_norm. Their scores take TRL's `f_divergence_type`, and each has an Ada- version (adadpo.losses.adaptive):
  both responses share f'(z), so the stop-gradient beta_w balances them as for DPO.
- Separable, each response in terms of its own: nca_pair, bco_pair, sppo_hard, apo_zero, apo_down; batch-sorted:
  aot, aot_unpaired; and sft (the chosen responses' NLL). AdaDPO's balance needs the two responses inside one f(z)
  so that f'(z) cancels; here they have no common factor (or, for AOT, are not even paired after sorting), so there
  is no Ada- version (docs/losses.md, "Where the balance does not apply").

Notation: x_w = lw - rw, x_l = ll - rl (log-ratios), rewards beta * x as TRL logs them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from adadpo.losses.dpo_family import length_normalized_terms, log_ratio_terms
from adadpo.losses.heads import HINGE, SIGMOID, discopop_head, exo_head, robust_head
from adadpo.losses.pairwise import balance_metrics, pair_loss
from adadpo.losses.types import LossOutput, PreferenceInputs


# ---- DPO-form -------------------------------------------------------------------------------------------------------


def hinge_loss(inputs: PreferenceInputs, *, beta: float, f_divergence_type: str, f_alpha_divergence_coef: float):
    """SLiC's hinge:  L = max(0, 1 - beta (x_w - x_l))."""
    terms = log_ratio_terms(inputs, f_divergence_type, f_alpha_divergence_coef)
    return pair_loss(inputs, terms, beta_l=beta, head=HINGE)


def exo_pair_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    label_smoothing: float,
    f_divergence_type: str,
    f_alpha_divergence_coef: float,
) -> LossOutput:
    """EXO-pref:  L = KL(softmax(beta x) over the pair || [1 - e, e]),  e = label_smoothing > 0."""
    terms = log_ratio_terms(inputs, f_divergence_type, f_alpha_divergence_coef)
    return pair_loss(inputs, terms, beta_l=beta, head=exo_head(label_smoothing))


def robust_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    label_smoothing: float,
    f_divergence_type: str,
    f_alpha_divergence_coef: float,
) -> LossOutput:
    """Robust DPO:  L = (-(1-e) log sigma(z) + e log sigma(-z)) / (1 - 2e),  z = beta (x_w - x_l)."""
    terms = log_ratio_terms(inputs, f_divergence_type, f_alpha_divergence_coef)
    return pair_loss(inputs, terms, beta_l=beta, head=robust_head(label_smoothing))


def discopop_loss(
    inputs: PreferenceInputs,
    *,
    beta: float,
    discopop_tau: float,
    f_divergence_type: str,
    f_alpha_divergence_coef: float,
) -> LossOutput:
    """DiscoPOP:  L = -log sigma(z) (1 - sigma(z/tau)) + exp(-z) sigma(z/tau),  z = beta (x_w - x_l)."""
    terms = log_ratio_terms(inputs, f_divergence_type, f_alpha_divergence_coef)
    return pair_loss(inputs, terms, beta_l=beta, head=discopop_head(discopop_tau))


def sigmoid_norm_loss(
    inputs: PreferenceInputs, *, beta: float, f_divergence_type: str, f_alpha_divergence_coef: float
) -> LossOutput:
    """Length-normalized DPO:  L = -log sigma(beta (x_w/|yw| - x_l/|yl|))."""
    terms = length_normalized_terms(inputs, log_ratio_terms(inputs, f_divergence_type, f_alpha_divergence_coef))
    return pair_loss(inputs, terms, beta_l=beta, head=SIGMOID)


# ---- Separable and batch-sorted -------------------------------------------------------------------------------------
# Each gives its loss and, for the balance metric, log|dL/dlw| and log|dL/dll| in closed form and in log space (so
# that a gradient too small for the float format, e.g. sigma(-1000), still has a finite log).


def _log_abs_sub(log_a: Tensor, log_b: Tensor) -> Tensor:
    """log|e^a - e^b| (-inf where they are equal)."""
    high, low = torch.maximum(log_a, log_b), torch.minimum(log_a, log_b)
    return high + torch.log(-torch.expm1(low - high))


def _log_sigmoid_slope(z: Tensor) -> Tensor:
    """log sigma'(z) = log sigma(z) + log sigma(-z)."""
    return F.logsigmoid(z) + F.logsigmoid(-z)


def separable_loss(
    inputs: PreferenceInputs,
    beta: float,
    losses: Tensor,
    log_grad_w: Tensor,
    log_grad_l: Tensor,
    reference: bool = True,
) -> LossOutput:
    """`losses` with rewards beta * x (beta * l without a reference) and the balance from the log-gradients."""
    lw, ll = inputs.policy_chosen_logps, inputs.policy_rejected_logps
    chosen = lw - inputs.ref_chosen_logps if reference else lw
    rejected = ll - inputs.ref_rejected_logps if reference else ll
    beta_t = torch.full_like(lw.detach(), beta)
    return LossOutput(
        losses=losses,
        chosen_rewards=(beta * chosen).detach(),
        rejected_rewards=(beta * rejected).detach(),
        metrics={
            "beta_w": beta_t,
            "beta_l": beta_t,
            "clipped": torch.zeros_like(beta_t, dtype=torch.bool),
            **balance_metrics(inputs, log_grad_w.detach(), log_grad_l.detach()),
        },
    )


def _log_ratios(inputs: PreferenceInputs) -> tuple[Tensor, Tensor]:
    return (
        inputs.policy_chosen_logps - inputs.ref_chosen_logps,
        inputs.policy_rejected_logps - inputs.ref_rejected_logps,
    )


def nca_pair_loss(inputs: PreferenceInputs, *, beta: float) -> LossOutput:
    """NCA:  L = -log sigma(beta x_w) - 1/2 log sigma(-beta x_w) - 1/2 log sigma(-beta x_l)."""
    x_w, x_l = _log_ratios(inputs)
    cw, cl = beta * x_w, beta * x_l
    losses = -F.logsigmoid(cw) - 0.5 * F.logsigmoid(-cw) - 0.5 * F.logsigmoid(-cl)
    # dL/dx_w = beta (sigma(cw)/2 - sigma(-cw)), dL/dx_l = beta sigma(cl)/2
    log_grad_w = math.log(beta) + _log_abs_sub(math.log(0.5) + F.logsigmoid(cw), F.logsigmoid(-cw))
    log_grad_l = math.log(0.5 * beta) + F.logsigmoid(cl)
    return separable_loss(inputs, beta, losses, log_grad_w, log_grad_l)


def bco_pair_loss(inputs: PreferenceInputs, *, beta: float) -> LossOutput:
    """BCO (paired):  L = -log sigma(beta x_w) - log sigma(-beta x_l)."""
    x_w, x_l = _log_ratios(inputs)
    losses = -F.logsigmoid(beta * x_w) - F.logsigmoid(-beta * x_l)
    log_grad_w = math.log(beta) + F.logsigmoid(-beta * x_w)
    log_grad_l = math.log(beta) + F.logsigmoid(beta * x_l)
    return separable_loss(inputs, beta, losses, log_grad_w, log_grad_l)


def sppo_hard_loss(inputs: PreferenceInputs, *, beta: float) -> LossOutput:
    """SPPO (hard preference probability):  L = (x_w - 1/(2 beta))^2 + (x_l + 1/(2 beta))^2."""
    x_w, x_l = _log_ratios(inputs)
    err_w, err_l = x_w - 0.5 / beta, x_l + 0.5 / beta
    losses = err_w**2 + err_l**2
    return separable_loss(inputs, beta, losses, torch.log(2 * err_w.abs()), torch.log(2 * err_l.abs()))


def _smoothed_logistic(delta: Tensor, beta: float, label_smoothing: float) -> tuple[Tensor, Tensor]:
    """AOT's -(1-e) log sigma(beta d) - e log sigma(-beta d), and log|d/dd| of it."""
    losses = -F.logsigmoid(beta * delta) * (1 - label_smoothing) - F.logsigmoid(-beta * delta) * label_smoothing
    log_e = math.log(label_smoothing) if label_smoothing > 0 else -math.inf
    log_slope = math.log(beta) + _log_abs_sub(
        math.log1p(-label_smoothing) + F.logsigmoid(-beta * delta), log_e + F.logsigmoid(beta * delta)
    )
    return losses, log_slope


def aot_loss(inputs: PreferenceInputs, *, beta: float, label_smoothing: float) -> LossOutput:
    """AOT (paired): the micro-batch's sorted policy margins lw - ll against its sorted reference margins rw - rl,
    L_i = -(1-e) log sigma(beta d_i) - e log sigma(-beta d_i), d = sort(lw - ll) - sort(rw - rl).

    Pair i's margin lands at its rank r(i): dL/dlw_i = -dL/dll_i = f'(d_r(i)), so its balance ratio is 1."""
    margins = inputs.policy_chosen_logps - inputs.policy_rejected_logps
    sorted_margins, order = torch.sort(margins, dim=0)
    delta = sorted_margins - torch.sort(inputs.ref_chosen_logps - inputs.ref_rejected_logps, dim=0).values
    losses, log_slope = _smoothed_logistic(delta, beta, label_smoothing)
    log_grad = torch.empty_like(log_slope).scatter_(0, order, log_slope)
    return separable_loss(inputs, beta, losses, log_grad, log_grad)


def aot_unpaired_loss(inputs: PreferenceInputs, *, beta: float, label_smoothing: float) -> LossOutput:
    """AOT (unpaired): d = sort(x_w) - sort(x_l) over the micro-batch, then AOT's smoothed logistic loss; x_w_i moves
    the term of its rank among the x_w, x_l_i that of its rank among the x_l."""
    x_w, x_l = _log_ratios(inputs)
    sorted_w, order_w = torch.sort(x_w, dim=0)
    sorted_l, order_l = torch.sort(x_l, dim=0)
    losses, log_slope = _smoothed_logistic(sorted_w - sorted_l, beta, label_smoothing)
    log_grad_w = torch.empty_like(log_slope).scatter_(0, order_w, log_slope)
    log_grad_l = torch.empty_like(log_slope).scatter_(0, order_l, log_slope)
    return separable_loss(inputs, beta, losses, log_grad_w, log_grad_l)


def apo_zero_loss(inputs: PreferenceInputs, *, beta: float) -> LossOutput:
    """APO-zero (chosen better than the model's own answers):  L = 1 - sigma(beta x_w) + sigma(beta x_l)."""
    x_w, x_l = _log_ratios(inputs)
    losses = 1 - torch.sigmoid(beta * x_w) + torch.sigmoid(beta * x_l)
    log_grad_w = math.log(beta) + _log_sigmoid_slope(beta * x_w)
    log_grad_l = math.log(beta) + _log_sigmoid_slope(beta * x_l)
    return separable_loss(inputs, beta, losses, log_grad_w, log_grad_l)


def apo_down_loss(inputs: PreferenceInputs, *, beta: float) -> LossOutput:
    """APO-down (chosen worse than the model's own answers):  L = sigma(beta x_w) + 1 - sigma(beta (x_w - x_l))."""
    x_w, x_l = _log_ratios(inputs)
    losses = torch.sigmoid(beta * x_w) + 1 - torch.sigmoid(beta * (x_w - x_l))
    log_slope_margin = _log_sigmoid_slope(beta * (x_w - x_l))
    log_grad_w = math.log(beta) + _log_abs_sub(_log_sigmoid_slope(beta * x_w), log_slope_margin)
    log_grad_l = math.log(beta) + log_slope_margin
    return separable_loss(inputs, beta, losses, log_grad_w, log_grad_l)


def sft_loss(inputs: PreferenceInputs) -> LossOutput:
    """The chosen responses' NLL, averaged over every chosen token of the micro-batch (TRL's `sft`, MPO's L_SFT):
    L = -sum(lw) / sum(|yw|), the same value for each pair (so that pair weights, e.g. WPO's, apply as in TRL).
    The rejected responses get no gradient: the balance is +inf, as for ORPO with lambda = 0."""
    lw = inputs.policy_chosen_logps
    total = inputs.chosen_lengths.sum()
    losses = (-lw.sum() / total).expand_as(lw)
    log_grad_w = torch.full_like(lw.detach(), -math.log(float(total)))
    log_grad_l = torch.full_like(lw.detach(), -math.inf)
    return separable_loss(inputs, 1.0, losses, log_grad_w, log_grad_l, reference=False)


def hinge_identity_loss(hparams: dict, chosen_lengths: Tensor, rejected_lengths: Tensor) -> Tensor:
    """max(0, 1 - 0) = 1 per pair at step 0."""
    return torch.ones(chosen_lengths.shape, dtype=torch.float32, device=chosen_lengths.device)
