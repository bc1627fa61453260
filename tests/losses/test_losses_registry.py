"""The registry, hyperparameter checks and input checks: clear errors that name the fix (issue 2, test 6)."""

import dataclasses
import math

import pytest
import torch

from adadpo.losses import (
    LOSS_HPARAM_DEFAULTS,
    LOSS_SPECS,
    LOSSES,
    AlphaMarginNormalizer,
    LossOutput,
    LossSpec,
    preference_loss,
)
from tests.helpers.losses import required


def batch(b=3, refs=True):
    out = {
        "policy_chosen_logps": torch.tensor([-10.0, -20.0, -5.0][:b]),
        "policy_rejected_logps": torch.tensor([-12.0, -18.0, -9.0][:b]),
        "chosen_lengths": torch.tensor([4, 8, 2][:b]),
        "rejected_lengths": torch.tensor([5, 6, 3][:b]),
    }
    if refs:
        out["ref_chosen_logps"] = torch.tensor([-11.0, -19.0, -6.0][:b])
        out["ref_rejected_logps"] = torch.tensor([-11.0, -19.0, -8.0][:b])
    return out


def test_registry_is_sorted_complete_and_consistent():
    expected = {"dpo", "ipo", "rdpo", "cpo", "orpo", "simpo", "alpha_dpo", "madpo", "adadpo"}
    expected |= {"ada_ipo", "ada_rdpo", "ada_cpo", "ada_orpo", "ada_simpo"}
    expected |= {"hinge", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired"}
    expected |= {"apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"}  # TRL 1.16's types (sigmoid = dpo)
    expected |= {"ada_hinge", "ada_exo_pair", "ada_robust", "ada_discopop", "ada_sigmoid_norm"}
    assert set(LOSSES) == expected
    assert list(LOSSES) == sorted(LOSSES) and list(LOSS_SPECS) == list(LOSSES)
    for name, spec in LOSS_SPECS.items():
        assert isinstance(spec, LossSpec) and spec.name == name
        assert set(spec.hparams) <= set(LOSS_HPARAM_DEFAULTS), name
        assert spec.formula and "arXiv" in spec.paper, name
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.name = "x"
    reference_free = {n for n, s in LOSS_SPECS.items() if not s.needs_reference}
    assert reference_free == {"simpo", "cpo", "orpo", "ada_simpo", "ada_cpo", "ada_orpo", "sft"}
    assert [n for n, s in LOSS_SPECS.items() if s.needs_reward_margin] == ["madpo"]
    assert [n for n, s in LOSS_SPECS.items() if s.needs_margin_normalizer] == ["alpha_dpo"]


def test_every_hyperparameter_is_used_by_some_loss():
    used = {h for spec in LOSS_SPECS.values() for h in spec.hparams}
    assert used == set(LOSS_HPARAM_DEFAULTS)


def test_unknown_loss_lists_every_name():
    with pytest.raises(ValueError) as err:
        preference_loss("adpo", **batch())
    for name in LOSSES:
        assert name in str(err.value)


@pytest.mark.parametrize("name", [n for n, s in LOSS_SPECS.items() if s.needs_reference])
def test_reference_loss_without_reference_says_how_to_fix(name):
    with pytest.raises(ValueError, match="needs reference log-probs") as err:
        preference_loss(name, **batch(refs=False), **required(name))
    message = str(err.value)
    assert "reference model" in message and "simpo" in message and "ada_orpo" in message


def test_reference_free_losses_run_without_reference():
    for name, spec in LOSS_SPECS.items():
        if not spec.needs_reference:
            assert isinstance(preference_loss(name, **batch(refs=False)), LossOutput)


def test_madpo_without_margins_names_the_dataset_column():
    with pytest.raises(ValueError, match="reward_margin") as err:
        preference_loss("madpo", **batch())
    assert "score_chosen" in str(err.value) and "score_rejected" in str(err.value)


def test_alpha_dpo_requires_a_normalizer_and_a_consistent_momentum():
    with pytest.raises(ValueError, match="AlphaMarginNormalizer"):
        preference_loss("alpha_dpo", **batch())
    with pytest.raises(ValueError, match="alpha_dpo_momentum=0.5.*momentum=0.9"):
        preference_loss("alpha_dpo", **batch(), margin_normalizer=AlphaMarginNormalizer(), alpha_dpo_momentum=0.5)
    out = preference_loss(
        "alpha_dpo", **batch(), margin_normalizer=AlphaMarginNormalizer(momentum=0.5), alpha_dpo_momentum=0.5
    )
    assert torch.isfinite(out.losses).all()


def test_unknown_hyperparameter_lists_valid_names():
    with pytest.raises(ValueError, match="adadpo_clp") as err:
        preference_loss("adadpo", **batch(), adadpo_clp=2.0)
    assert "adadpo_clip" in str(err.value) and "madpo_tau" in str(err.value)


def test_known_but_unused_hyperparameters_are_ignored_and_missing_take_defaults():
    plain = preference_loss("dpo", **batch())
    everything = preference_loss("dpo", **batch(), **{**LOSS_HPARAM_DEFAULTS, "simpo_gamma": 3.0, "cpo_alpha": 0.0})
    assert torch.equal(plain.losses, everything.losses)
    torch.testing.assert_close(plain.metrics["beta_w"], torch.full((3,), LOSS_HPARAM_DEFAULTS["beta"]))


BAD_VALUES = [
    ("beta", 0.0),
    ("beta", -0.1),
    ("beta", math.inf),
    ("beta", "0.1"),
    ("beta", True),
    ("adadpo_clip", 0.0),
    ("adadpo_clip", -1.0),
    ("adadpo_scale", 0.0),
    ("alpha_dpo_alpha", -0.1),
    ("simpo_gamma", math.nan),
    ("simpo_gamma", math.inf),
    ("adadpo_balance", "reference"),
    ("nll_average", "tokens"),
    ("adadpo_length_normalize", "false"),
    ("alpha_dpo_momentum", 1.0),
    ("rdpo_alpha", -1.0),
    ("cpo_alpha", -1.0),
    ("orpo_lambda", -1.0),
    ("sft_weight", -1.0),
    ("madpo_c_max", 0.5),
    ("madpo_c_min", 1.0),
    ("madpo_lambda", -1.0),
    ("madpo_tau", -1.0),
]


@pytest.mark.parametrize("field,value", BAD_VALUES)
def test_bad_hyperparameter_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        preference_loss("dpo", **batch(), **{field: value})


def test_yaml_string_number_gets_a_hint():
    with pytest.raises(ValueError, match="0.05"):
        preference_loss("rdpo", **batch(), rdpo_alpha="5e-2")


def test_clip_none_is_allowed():
    out = preference_loss("adadpo", **batch(), adadpo_clip=None)
    assert not out.metrics["clipped"].any()


def test_every_default_is_valid_for_every_loss():
    for name in LOSSES:
        extra = {"reward_margins": torch.zeros(3)} if name == "madpo" else {}
        if name == "alpha_dpo":
            extra = {"margin_normalizer": AlphaMarginNormalizer()}
        out = preference_loss(name, **batch(), **extra, **{**LOSS_HPARAM_DEFAULTS, **required(name)})
        assert out.losses.shape == (3,) and {"beta_w", "beta_l", "clipped", "grad_balance"} <= set(out.metrics)
        for key in ("beta_w", "beta_l", "clipped", "grad_balance"):
            assert out.metrics[key].shape == (3,), (name, key)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"chosen_lengths": torch.tensor([0, 1, 2])}, "chosen_lengths must be completion token counts >= 1"),
        ({"rejected_lengths": torch.tensor([1.0, math.nan, 2.0])}, "rejected_lengths"),
        ({"policy_rejected_logps": torch.zeros(2)}, "same \\(B,\\) shape"),
        ({"policy_chosen_logps": torch.zeros(3, 1)}, "shape \\(B,\\)"),
        ({"policy_chosen_logps": torch.zeros(3, dtype=torch.long)}, "floating-point"),
        ({"ref_chosen_logps": [0.0, 0.0, 0.0]}, "ref_chosen_logps must be a torch.Tensor"),
    ],
)
def test_bad_inputs_are_rejected_with_the_tensor_named(change, message):
    with pytest.raises(ValueError, match=message):
        preference_loss("dpo", **{**batch(), **change})


def test_non_finite_reward_margins_are_rejected():
    with pytest.raises(ValueError, match="reward_margins must be finite"):
        preference_loss("madpo", **batch(), reward_margins=torch.tensor([0.0, math.inf, 1.0]))
