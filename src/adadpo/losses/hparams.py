"""Every loss hyperparameter by its config field name: defaults and value checks."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any


LOSS_HPARAM_DEFAULTS: dict[str, Any] = {
    "beta": 0.1,  # DPO's (and TRL's) default; SimPO-family recipes use beta ~ 2-10, ORPO's recipe 1.0
    "adadpo_clip": 2.0,  # C of Stable AdaDPO (Listing 1); None disables the clip
    "adadpo_length_normalize": True,  # Stable (per-token) balance, paper §6.1; False = eq. (6)
    "adadpo_balance": "ratio",  # "ratio" (eq. 5, uses the reference) or "policy" (eq. 4)
    "adadpo_scale": 1.0,  # k of appendix A.3: beta_w / beta_l = k * sg(...)
    "simpo_gamma": 0.5,  # SimPO / alpha-DPO target margin gamma (absolute, not gamma/beta)
    "sft_weight": 0.0,  # SimPO's optional SFT term on the chosen response
    "nll_average": "batch",  # NLL/SFT term of cpo/orpo/simpo: token average over the micro-batch (as the references)
    "alpha_dpo_alpha": 0.2,  # alpha-DPO's alpha (weight of the normalized margin M*), eq. 12 form
    "alpha_dpo_momentum": 0.9,  # EMA momentum of alpha-DPO's margin statistics (official code)
    "rdpo_alpha": 0.05,  # R-DPO's length penalty alpha
    "cpo_alpha": 1.0,  # CPO's NLL weight lambda
    "orpo_lambda": 0.1,  # ORPO's odds-ratio weight lambda (ORPO paper)
    "madpo_c_max": 2.0,  # MADPO's largest margin scale (hard pairs), reference code
    "madpo_c_min": 0.5,  # MADPO's smallest margin scale (easy pairs); the reference code uses 1 / c_max
    "madpo_lambda": 1.0,  # MADPO's steepness of c(h) around tau
    "madpo_tau": math.log(999.0),  # MADPO's hard/easy threshold on |h|: log(0.999 / 0.001), reference code
}

ADADPO_BALANCES = ("ratio", "policy")
NLL_AVERAGES = ("batch", "pair")


def _number(name: str, value: Any, ok: Callable[[float], bool], requirement: str, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"{name} must be a number {requirement}, got {value!r} ({type(value).__name__}); set e.g. {name}={example}"
            + (" (a YAML value like 5e-2 parses as a string: write 0.05)" if isinstance(value, str) else "")
        )
    if not math.isfinite(float(value)) or not ok(float(value)):
        raise ValueError(f"{name} must be a finite number {requirement}, got {value!r}; set e.g. {name}={example}")


def _check_beta(v: Any) -> None:
    _number("beta", v, lambda x: x > 0, "> 0", "0.1")


def _check_clip(v: Any) -> None:
    if v is not None:
        _number("adadpo_clip", v, lambda x: x > 0, "> 0 (or None to disable clipping)", "2.0")


def _check_length_normalize(v: Any) -> None:
    if not isinstance(v, bool):
        raise ValueError(f"adadpo_length_normalize must be True or False, got {v!r} ({type(v).__name__})")


def _one_of(name: str, choices: tuple[str, ...]) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        if v not in choices:
            raise ValueError(f"{name} must be one of {list(choices)}, got {v!r}")

    return check


def _non_negative(name: str, example: str) -> Callable[[Any], None]:
    return lambda v: _number(name, v, lambda x: x >= 0, ">= 0", example)


_CHECKS: dict[str, Callable[[Any], None]] = {
    "beta": _check_beta,
    "adadpo_clip": _check_clip,
    "adadpo_length_normalize": _check_length_normalize,
    "adadpo_balance": _one_of("adadpo_balance", ADADPO_BALANCES),
    "adadpo_scale": lambda v: _number("adadpo_scale", v, lambda x: x > 0, "> 0", "1.0"),
    "simpo_gamma": lambda v: _number("simpo_gamma", v, lambda x: True, "(any finite value)", "0.5"),
    "sft_weight": _non_negative("sft_weight", "0.0"),
    "nll_average": _one_of("nll_average", NLL_AVERAGES),
    "alpha_dpo_alpha": _non_negative("alpha_dpo_alpha", "0.2"),
    "alpha_dpo_momentum": lambda v: _number("alpha_dpo_momentum", v, lambda x: 0 <= x < 1, "in [0, 1)", "0.9"),
    "rdpo_alpha": _non_negative("rdpo_alpha", "0.05"),
    "cpo_alpha": _non_negative("cpo_alpha", "1.0"),
    "orpo_lambda": _non_negative("orpo_lambda", "0.1"),
    "madpo_c_max": lambda v: _number("madpo_c_max", v, lambda x: x >= 1, ">= 1", "2.0"),
    "madpo_c_min": lambda v: _number("madpo_c_min", v, lambda x: 0 <= x < 1, "in [0, 1)", "0.5"),
    "madpo_lambda": _non_negative("madpo_lambda", "1.0"),
    "madpo_tau": _non_negative("madpo_tau", "6.9"),
}
assert set(_CHECKS) == set(LOSS_HPARAM_DEFAULTS), "every hyperparameter needs a default and a check"


def validate_loss_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Check names and values; return every hyperparameter with defaults filled in.

    Unknown names raise (catches typos); every given value is checked, whichever loss uses it.
    """
    unknown = sorted(set(hparams) - set(LOSS_HPARAM_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown loss hyperparameter(s) {unknown}; valid names are {sorted(LOSS_HPARAM_DEFAULTS)}")
    resolved = {**LOSS_HPARAM_DEFAULTS, **hparams}
    for name in hparams:
        _CHECKS[name](resolved[name])
    return resolved
