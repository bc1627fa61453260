"""The outer function f of `L = w f(z) + nll` (adadpo.losses.pairwise), one small object per shape.

    sigmoid   f(z) = -log sigma(z)                                         DPO and its family
    cdpo      f(z) = -(1-e) log sigma(z) - e log sigma(-z)                 conservative DPO (label smoothing e)
    robust    f(z) = (-(1-e) log sigma(z) + e log sigma(-z)) / (1 - 2e)    robust DPO (Chowdhury et al. 2024)
    exo       f(z) = s(z)(log s(z) - log(1-e)) + s(-z)(log s(-z) - log e)   EXO-pref, s = sigma (Ji et al. 2024)
    hinge     f(z) = max(0, 1 - z)                                         SLiC (Zhao et al. 2023)
    discopop  f(z) = -log sigma(z) (1 - sigma(z/tau)) + exp(-z) sigma(z/tau)   DiscoPOP (Chris Lu et al. 2024)
    square    f(z) = z^2                                                   IPO (its margin 1/(2 beta) is in z)

`log_abs_slope(z)` is log|f'(z)| for the gradient-balance metric. Both responses of a pair share f'(z), so it cancels
from the balance; only the sigmoid head keeps it, because only its losses add an NLL term on the chosen response
(CPO, ORPO, SimPO's sft_weight) whose gradient does not carry f'. The other heads take no NLL term, and where their
f' vanishes (hinge past the margin, IPO at z = 0) the balance reported is the limit, f' cancelled.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Head:
    name: str
    value: Callable[[Tensor], Tensor]
    log_abs_slope: Callable[[Tensor], Tensor] | None = None  # None: cancels in the balance; no NLL term allowed


SIGMOID = Head("sigmoid", lambda z: -F.logsigmoid(z), lambda z: F.logsigmoid(-z))
SQUARE = Head("square", torch.square)
HINGE = Head("hinge", lambda z: F.relu(1.0 - z))


def sigmoid_head(label_smoothing: float = 0.0) -> Head:
    """DPO's head; with label smoothing e > 0, conservative DPO's: the preference is flipped with probability e."""
    if label_smoothing == 0.0:
        return SIGMOID
    e = label_smoothing
    return Head("cdpo", lambda z: -(1.0 - e) * F.logsigmoid(z) - e * F.logsigmoid(-z))


def robust_head(label_smoothing: float) -> Head:
    """Robust DPO: an unbiased estimate of the clean-label loss under flip rate e < 1/2."""
    e = label_smoothing
    return Head("robust", lambda z: (-(1.0 - e) * F.logsigmoid(z) + e * F.logsigmoid(-z)) / (1.0 - 2.0 * e))


def exo_head(label_smoothing: float) -> Head:
    """EXO-pref (K = 2): KL(softmax over the pair || [1 - e, e]); e > 0 (log e)."""
    log_pw, log_pl = math.log1p(-label_smoothing), math.log(label_smoothing)

    def value(z: Tensor) -> Tensor:
        return torch.sigmoid(z) * (F.logsigmoid(z) - log_pw) + torch.sigmoid(-z) * (F.logsigmoid(-z) - log_pl)

    return Head("exo", value)


def discopop_head(tau: float) -> Head:
    """DiscoPOP's log-ratio modulated loss: logistic and exponential losses blended by sigma(z / tau)."""

    def value(z: Tensor) -> Tensor:
        # exp(-z) sigma(z/tau) as exp(-z + log sigma(z/tau)): finite for very negative z when tau < 1
        return -F.logsigmoid(z) * torch.sigmoid(-z / tau) + torch.exp(F.logsigmoid(z / tau) - z)

    return Head("discopop", value)
