"""Every loss hyperparameter, declared once: its name (the recipe key), default, help text, type and allowed values.

A declaration here is all there is to a hyperparameter. `adadpo.config.AdaDPOConfig` derives its fields (type,
default, `--help` text, choices) from `LOSS_HPARAMS`, the resolved recipe saved with a run lists it like any field,
`validate_loss_hparams` checks it, and a loss reads it by taking it as a keyword argument (the registry reads the
loss function's signature: `LossSpec.hparams`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from adadpo.user_numbers import check_range


@dataclass(frozen=True)
class HParam:
    """One loss hyperparameter. `kind` is its Python type (float, bool or str); `optional` allows None (off);
    `choices` lists a str hyperparameter's values; `check` raises a ValueError naming the key and the fix."""

    name: str
    default: Any
    help: str
    kind: type
    check: Callable[[Any], None]
    optional: bool = False
    choices: tuple[str, ...] | None = None


def number(
    name: str,
    default: float,
    ok: Callable[[float], bool] = math.isfinite,
    requirement: str = "",
    *,
    help: str,
    optional: bool = False,
) -> HParam:
    """A float hyperparameter with `ok(value)` as its range (`requirement` says it in words)."""

    def check(value):
        if not (optional and value is None):
            check_range(name, value, ok, requirement, example=repr(default))

    return HParam(name, default, help, float, check, optional=optional)


def flag(name: str, default: bool, *, help: str) -> HParam:
    def check(value):
        if not isinstance(value, bool):
            raise ValueError(f"`{name}` must be true or false, got {value!r} ({type(value).__name__})")

    return HParam(name, default, help, bool, check)


def choice(name: str, default: str, choices: tuple[str, ...], *, help: str) -> HParam:
    def check(value):
        if value not in choices:
            raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}")

    return HParam(name, default, help, str, check, choices=choices)


def _positive(x: float) -> bool:
    return x > 0


def _non_negative(x: float) -> bool:
    return x >= 0


LOSS_HPARAMS: dict[str, HParam] = {
    hparam.name: hparam
    for hparam in [
        number(
            "beta",
            0.1,
            _positive,
            "> 0",
            help="beta, the inverse temperature of the preference term (DPO's and TRL's default 0.1; SimPO recipes "
            "use 2-10, ORPO's 1.0).",
        ),
        number(
            "adadpo_clip",
            2.0,
            _positive,
            "> 0 (or null to disable clipping)",
            optional=True,
            help="C of Stable AdaDPO (Listing 1): beta_w <= C * beta. `null` disables the clip.",
        ),
        flag(
            "adadpo_length_normalize",
            True,
            help="Balance on per-token log ratios (Stable AdaDPO, Listing 1); false: on summed log-probs (eq. 6).",
        ),
        choice(
            "adadpo_balance",
            "ratio",
            ("ratio", "policy"),
            help="'ratio': balance the gradients w.r.t. P/P_ref (eq. 5). 'policy': w.r.t. P (eq. 4).",
        ),
        number("adadpo_scale", 1.0, _positive, "> 0", help="k of appendix A.3: beta_w / beta_l = k * sg(...)."),
        number("simpo_gamma", 0.5, help="Target reward margin gamma of SimPO and alpha-DPO (gamma, not gamma/beta)."),
        number("sft_weight", 0.0, _non_negative, ">= 0", help="Weight of SimPO's optional NLL term on the chosen."),
        choice(
            "nll_average",
            "batch",
            ("batch", "pair"),
            help="How the chosen-response NLL of cpo, orpo and simpo's `sft_weight` term (and their Ada- versions) "
            "averages tokens. 'batch': sum(-log p) / sum(|y_w|) over the micro-batch, as TRL's CPO/ORPO and the "
            "official SimPO trainer. 'pair': each pair's own token average, then the mean over pairs.",
        ),
        number(
            "alpha_dpo_alpha",
            0.2,
            _non_negative,
            ">= 0",
            help="alpha of alpha-DPO in the paper's eq. 12 form, the weight of the normalised margin: the official "
            "code's `alpha` times beta (docs/losses.md).",
        ),
        number(
            "alpha_dpo_momentum",
            0.9,
            lambda x: 0 <= x < 1,
            "in [0, 1)",
            help="EMA momentum of alpha-DPO's margin mean/std normaliser (official code; saved with checkpoints).",
        ),
        number("rdpo_alpha", 0.05, _non_negative, ">= 0", help="alpha of R-DPO: the length term alpha (|yw| - |yl|)."),
        number("cpo_alpha", 1.0, _non_negative, ">= 0", help="lambda of CPO: the weight of the NLL on the chosen."),
        number("orpo_lambda", 0.1, _non_negative, ">= 0", help="lambda of ORPO: the weight of the odds-ratio term."),
        number("madpo_c_max", 2.0, lambda x: x >= 1, ">= 1", help="MADPO: the largest weight, for the hardest pairs."),
        number(
            "madpo_c_min",
            0.5,
            lambda x: 0 <= x < 1,
            "in [0, 1)",
            help="MADPO: the smallest weight, for the easiest pairs (the reference code uses 1 / c_max).",
        ),
        number(
            "madpo_lambda", 1.0, _non_negative, ">= 0", help="MADPO: the steepness of the weight around madpo_tau."
        ),
        number(
            "madpo_tau",
            math.log(999.0),
            _non_negative,
            ">= 0",
            help="MADPO: the hard/easy threshold on |h_rm|, log(0.999 / 0.001) as in the reference code.",
        ),
        # TRL's DPOConfig options that change the loss (same names and defaults as TRL 1.16)
        number(
            "label_smoothing",
            0.0,
            lambda x: 0 <= x < 0.5,
            "in [0, 0.5)",
            help="Probability that a preference label is flipped: conservative DPO (dpo/sigmoid, adadpo), robust, "
            "exo_pair (needs > 0), aot, aot_unpaired.",
        ),
        choice(
            "f_divergence_type",
            "reverse_kl",
            ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"),
            help="The divergence whose f'(ratio) scores each response in the DPO-form losses (reverse_kl is DPO; "
            "arXiv 2309.16240).",
        ),
        number(
            "f_alpha_divergence_coef",
            0.5,
            help="alpha of `f_divergence_type: alpha_divergence` (alpha = 1 is reverse_kl).",
        ),
        number("discopop_tau", 0.05, _positive, "> 0", help="tau of DiscoPOP's log-ratio modulation."),
    ]
}
# Derived, for readers and tests: the default of every hyperparameter.
LOSS_HPARAM_DEFAULTS: dict[str, Any] = {name: hparam.default for name, hparam in LOSS_HPARAMS.items()}


def validate_loss_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Check names and values; return every hyperparameter with defaults filled in.

    Unknown names raise (catches typos); every given value is checked, whichever loss uses it.
    """
    unknown = sorted(set(hparams) - set(LOSS_HPARAMS))
    if unknown:
        raise ValueError(f"unknown loss hyperparameter(s) {unknown}; valid names are {sorted(LOSS_HPARAMS)}")
    for name, value in hparams.items():
        LOSS_HPARAMS[name].check(value)
    return {**{name: hparam.default for name, hparam in LOSS_HPARAMS.items()}, **hparams}
