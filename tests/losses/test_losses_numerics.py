"""Every registered loss stays finite at the edges (issue 2, test 5)."""

import itertools

import pytest
import torch

from adadpo.losses import LOSSES, AlphaMarginNormalizer, preference_loss
from tests.helpers.losses import required


EDGE_LOGPS = [-1e4, -1e3, -1.0, -1e-6, 0.0]


def edge_batch(dtype):
    """All combinations of extreme policy/reference logps with lengths 1 and 1000 (lengths 1 at -1e4 included)."""
    rows = list(itertools.product(EDGE_LOGPS, EDGE_LOGPS, [-1e4, 0.0], [1, 1000]))
    lw = torch.tensor([r[0] for r in rows], dtype=dtype)
    ll = torch.tensor([r[1] for r in rows], dtype=dtype)
    ref = torch.tensor([r[2] for r in rows], dtype=dtype)
    n = torch.tensor([r[3] for r in rows])
    return {
        "policy_chosen_logps": lw,
        "policy_rejected_logps": ll,
        "chosen_lengths": n,
        "rejected_lengths": n.flip(0),
        "ref_chosen_logps": ref,
        "ref_rejected_logps": ref.flip(0),
        "reward_margins": torch.linspace(-1e4, 1e4, len(rows), dtype=dtype),
    }


def run(name, batch, **hparams):
    b = dict(batch)
    b["policy_chosen_logps"] = b["policy_chosen_logps"].clone().requires_grad_(True)
    b["policy_rejected_logps"] = b["policy_rejected_logps"].clone().requires_grad_(True)
    extra = {"margin_normalizer": AlphaMarginNormalizer()} if name == "alpha_dpo" else {}
    out = preference_loss(name, **b, **extra, **{**required(name), **hparams})
    leaves = [b["policy_chosen_logps"], b["policy_rejected_logps"]]
    grads = torch.autograd.grad(out.losses.sum(), leaves, allow_unused=True, materialize_grads=True)
    return out, grads


# Losses whose gradient on one response can be exactly 0 (sft never moves the rejected; APO-down's two chosen terms
# cancel where x_l = 0): their balance is then an exact +-inf, never NaN.
EXACT_ZERO_GRADIENT = {"sft", "apo_down"}
BALANCE_METRICS = ("grad_balance", "log_grad_balance", "token_grad_balance")


def assert_all_finite(name, out, grads):
    assert torch.isfinite(out.losses).all(), f"{name}: non-finite loss"
    assert all(torch.isfinite(g).all() for g in grads), f"{name}: non-finite gradient"
    assert torch.isfinite(out.chosen_rewards).all() and torch.isfinite(out.rejected_rewards).all(), name
    for key, value in out.metrics.items():
        if name in EXACT_ZERO_GRADIENT and key in BALANCE_METRICS:
            assert not torch.isnan(value.float()).any(), f"{name}: NaN metric {key}"
        else:
            assert torch.isfinite(value.float()).all(), f"{name}: non-finite metric {key}"


HPARAM_SETS = [
    {},
    {"adadpo_clip": None, "adadpo_length_normalize": False, "beta": 1.0},
    {"adadpo_clip": None, "adadpo_balance": "policy", "beta": 10.0, "sft_weight": 1.0},
]


@pytest.mark.parametrize("hparams", HPARAM_SETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", LOSSES)
def test_finite_at_extreme_logps_and_lengths(name, dtype, hparams):
    out, grads = run(name, edge_batch(dtype), **hparams)
    assert_all_finite(name, out, grads)


@pytest.mark.parametrize("name", LOSSES)
def test_batch_of_one_and_chosen_equal_rejected(name):
    single = {
        "policy_chosen_logps": torch.tensor([-37.5]),
        "policy_rejected_logps": torch.tensor([-37.5]),
        "chosen_lengths": torch.tensor([12]),
        "rejected_lengths": torch.tensor([12]),
        "ref_chosen_logps": torch.tensor([-40.0]),
        "ref_rejected_logps": torch.tensor([-40.0]),
        "reward_margins": torch.tensor([0.0]),
    }
    out, grads = run(name, single)
    assert out.losses.shape == (1,)
    assert_all_finite(name, out, grads)
    if name.startswith("ada"):  # identical responses are already balanced: beta_w = beta_l
        torch.testing.assert_close(out.metrics["beta_w"], out.metrics["beta_l"])


def test_bfloat16_inputs_are_computed_in_float32():
    batch = edge_batch(torch.bfloat16)
    out, grads = run("adadpo", batch)
    assert out.losses.dtype == torch.float32 and grads[0].dtype == torch.bfloat16
    assert_all_finite("adadpo", out, grads)


@pytest.mark.parametrize("name", ["orpo", "ada_orpo"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orpo_finite_as_mean_logp_goes_to_zero(name, dtype):
    """p = exp(l/|y|) -> 1 makes log(1 - p) -> -inf; the loss, gradient and balance must stay finite."""
    near_zero = torch.tensor([-1e-2, -1e-5, -1e-8, -1e-12, -1e-30, -1e-300, -0.0, 0.0], dtype=dtype)
    batch = {
        "policy_chosen_logps": near_zero,
        "policy_rejected_logps": near_zero.flip(0),
        "chosen_lengths": torch.ones(len(near_zero), dtype=torch.long),
        "rejected_lengths": torch.full((len(near_zero),), 3),
    }
    out, grads = run(name, batch, beta=1.0, orpo_lambda=1.0)
    assert_all_finite(name, out, grads)
    # away from the clamp the loss keeps moving with the logps (the clamp sits at -eps of the dtype)
    assert out.losses[0] != out.losses[1]
