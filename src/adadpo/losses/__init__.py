"""Preference losses: AdaDPO and its family as pure tensor functions (no models, no accelerate, no TRL).

    from adadpo.losses import LOSSES, PreferenceLoss, preference_loss
    out = preference_loss("adadpo", policy_chosen_logps=..., policy_rejected_logps=..., chosen_lengths=...,
                          rejected_lengths=..., ref_chosen_logps=..., ref_rejected_logps=..., beta=0.1)
    out.losses.mean().backward()

    loss_fn = PreferenceLoss.from_config(args)   # a trainer builds the loss once (hyperparameters, state)
    out = loss_fn(policy_chosen_logps=..., ..., training=True, gather=accelerator.gather)

See docs/losses.md for every formula, hyperparameter default and the AdaDPO balance derivations.
"""

from adadpo.losses.functional import preference_loss
from adadpo.losses.hparams import LOSS_HPARAM_DEFAULTS, LOSS_HPARAMS, HParam, validate_loss_hparams
from adadpo.losses.loss import LOSS_SPECS, LOSSES, REFERENCE_FREE_LOSSES, PreferenceLoss, get_loss_spec
from adadpo.losses.normalizer import AlphaMarginNormalizer
from adadpo.losses.types import LossOutput, LossSpec, PreferenceInputs


__all__ = [
    "LOSSES",
    "LOSS_HPARAMS",
    "LOSS_HPARAM_DEFAULTS",
    "LOSS_SPECS",
    "REFERENCE_FREE_LOSSES",
    "AlphaMarginNormalizer",
    "HParam",
    "LossOutput",
    "LossSpec",
    "PreferenceInputs",
    "PreferenceLoss",
    "get_loss_spec",
    "preference_loss",
    "validate_loss_hparams",
]
