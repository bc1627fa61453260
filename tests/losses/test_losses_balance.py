"""Gradient balance with autograd (issue 2, test 2), the Stable per-token balance, and the `grad_balance` metric.

Log-probs are the autograd leaves; dL/dQ = dL/dlog Q / Q for Q = P (policy) or R = P / P_ref (ratio), and since the
reference is constant dL/dlog R = dL/dlog P.
"""

import math

import pytest
import torch

from adadpo.losses import LOSSES, AlphaMarginNormalizer, preference_loss
from tests.helpers.losses import required


def moderate_pairs(batch_size=32, seed=0, max_len=40, ref_noise=3.0):
    """float64 pairs whose log-ratios stay within the coefficient cap (|log ratio| < 30) so balance is exact.

    For autograd balance checks of the un-normalized forms, keep |lw - ll| and |x| small (max_len=10,
    ref_noise=0.5) so that sigma(-z) does not underflow to 0 on both sides (0/0).
    """
    g = torch.Generator().manual_seed(seed)
    nw = torch.randint(1, max_len + 1, (batch_size,), generator=g)
    nl = torch.randint(1, max_len + 1, (batch_size,), generator=g)
    lw = -(nw * (0.05 + 0.6 * torch.rand(batch_size, generator=g, dtype=torch.float64)))
    ll = -(nl * (0.05 + 0.6 * torch.rand(batch_size, generator=g, dtype=torch.float64)))
    rw = lw + ref_noise * torch.randn(batch_size, generator=g, dtype=torch.float64)
    rl = ll + ref_noise * torch.randn(batch_size, generator=g, dtype=torch.float64)
    margins = 4 * torch.randn(batch_size, generator=g, dtype=torch.float64)
    return {
        "policy_chosen_logps": lw.requires_grad_(True),
        "policy_rejected_logps": ll.requires_grad_(True),
        "chosen_lengths": nw,
        "rejected_lengths": nl,
        "ref_chosen_logps": rw,
        "ref_rejected_logps": rl,
        "reward_margins": margins,
    }


def autograd_log_grads(loss, batch):
    leaves = [batch["policy_chosen_logps"], batch["policy_rejected_logps"]]
    g_w, g_l = torch.autograd.grad(loss.sum(), leaves, allow_unused=True, materialize_grads=True)  # sft: no l
    return g_w, g_l


def space_balance(g_w, g_l, batch, space):
    """|dL/dQ_w| / |dL/dQ_l| with dL/dQ = dL/dlog Q / Q."""
    log_q_w = batch["policy_chosen_logps"].detach()
    log_q_l = batch["policy_rejected_logps"].detach()
    if space == "ratio":
        log_q_w = log_q_w - batch["ref_chosen_logps"]
        log_q_l = log_q_l - batch["ref_rejected_logps"]
    return g_w.abs() / g_l.abs() * torch.exp(log_q_l - log_q_w)


BASE = {"adadpo_clip": None, "adadpo_length_normalize": False}


@pytest.mark.parametrize("balance", ["policy", "ratio"])
def test_base_adadpo_balances_its_own_space(balance):
    batch = moderate_pairs(max_len=10, ref_noise=0.5)
    out = preference_loss("adadpo", **batch, beta=0.1, adadpo_balance=balance, **BASE)
    g_w, g_l = autograd_log_grads(out.losses, batch)
    ratio = space_balance(g_w, g_l, batch, balance)
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=1e-6)
    if balance == "policy":  # the metric is policy-space: exactly AdaDPO's claim
        torch.testing.assert_close(out.metrics["grad_balance"], torch.ones_like(ratio), rtol=0, atol=1e-9)


ADA_SPACES = [
    ("adadpo", "policy", {}),
    ("adadpo", "ratio", {}),
    ("ada_rdpo", "policy", {"rdpo_alpha": 0.1}),
    ("ada_rdpo", "ratio", {"rdpo_alpha": 0.1}),
    ("ada_ipo", "policy", {}),
    ("ada_ipo", "ratio", {}),
    ("ada_cpo", "policy", {"cpo_alpha": 0.0}),  # the NLL term is not part of the balance
    ("ada_simpo", "policy", {"simpo_gamma": 0.5}),
    ("ada_orpo", "policy", {"orpo_lambda": 0.5}),  # balance of the odds-ratio term, NLL subtracted below
]


def pairwise_part(name, out, batch):
    """The loss minus ORPO's NLL (-lw/mean_batch(|yw|), the default nll_average), not balanced by design."""
    if name != "ada_orpo":
        return out.losses
    return out.losses + batch["policy_chosen_logps"] / batch["chosen_lengths"].double().mean()


@pytest.mark.parametrize("name,space,extra", ADA_SPACES)
def test_every_base_ada_variant_balances_its_own_space(name, space, extra):
    batch = moderate_pairs(seed=1, max_len=10, ref_noise=0.5)
    balance = {"adadpo_balance": space} if space == "ratio" or name in ("adadpo", "ada_rdpo", "ada_ipo") else {}
    out = preference_loss(name, **batch, beta=0.7, **BASE, **balance, **extra)
    g_w, g_l = autograd_log_grads(pairwise_part(name, out, batch), batch)
    ratio = space_balance(g_w, g_l, batch, space)
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name,space,extra", ADA_SPACES)
def test_stable_ada_variants_balance_per_token_gradients(name, space, extra):
    """Stable form: with each token's log-prob a leaf, dL/dp_t = dL/dlog p_t / p_t balances between y_w and y_l.

    Tokens of a response share one log-prob (so every token sits at the geometric mean the Stable form uses);
    in ratio space the reference is spread the same way and p_t is replaced by the per-token ratio.
    """
    batch = moderate_pairs(seed=2)
    nw, nl = batch["chosen_lengths"], batch["rejected_lengths"]
    width = int(max(nw.max(), nl.max()))
    mask_w = (torch.arange(width) < nw[:, None]).double()
    mask_l = (torch.arange(width) < nl[:, None]).double()
    tok_w = (batch["policy_chosen_logps"].detach() / nw)[:, None].expand(-1, width).clone().requires_grad_(True)
    tok_l = (batch["policy_rejected_logps"].detach() / nl)[:, None].expand(-1, width).clone().requires_grad_(True)
    token_batch = {
        **batch,
        "policy_chosen_logps": (tok_w * mask_w).sum(1),
        "policy_rejected_logps": (tok_l * mask_l).sum(1),
    }
    balance = {"adadpo_balance": space} if name in ("adadpo", "ada_rdpo", "ada_ipo") else {}
    out = preference_loss(
        name, **token_batch, beta=0.7, adadpo_clip=None, adadpo_length_normalize=True, **balance, **extra
    )
    g_tok_w, g_tok_l = torch.autograd.grad(pairwise_part(name, out, token_batch).sum(), [tok_w, tok_l])
    per_tok_w, per_tok_l = tok_w.detach()[:, 0], tok_l.detach()[:, 0]  # log p_t (or log rho_t below)
    if space == "ratio":
        per_tok_w = per_tok_w - batch["ref_chosen_logps"] / nw
        per_tok_l = per_tok_l - batch["ref_rejected_logps"] / nl
    ratio = g_tok_w[:, 0].abs() / g_tok_l[:, 0].abs() * torch.exp(per_tok_l - per_tok_w)
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=1e-6)


def test_dpo_balance_is_p_l_over_p_w_paper_example():
    """Paper's example: P_w = 0.10, P_l = 0.02, R_w = R_l  ->  |dL/dP_w| / |dL/dP_l| = P_l / P_w = 0.2."""
    lw = torch.tensor([math.log(0.10)], dtype=torch.float64, requires_grad=True)
    ll = torch.tensor([math.log(0.02)], dtype=torch.float64, requires_grad=True)
    batch = {
        "policy_chosen_logps": lw,
        "policy_rejected_logps": ll,
        "chosen_lengths": torch.tensor([5]),
        "rejected_lengths": torch.tensor([7]),
        "ref_chosen_logps": lw.detach() - 0.3,  # same ratio R = e^0.3 on both sides
        "ref_rejected_logps": ll.detach() - 0.3,
    }
    out = preference_loss("dpo", **batch, beta=0.1)
    g_w, g_l = autograd_log_grads(out.losses, batch)
    torch.testing.assert_close(space_balance(g_w, g_l, batch, "policy"), torch.tensor([0.2], dtype=torch.float64))
    torch.testing.assert_close(out.metrics["grad_balance"], torch.tensor([0.2], dtype=torch.float64))


def call(name, batch, **hparams):
    extra = {"margin_normalizer": AlphaMarginNormalizer()} if name == "alpha_dpo" else {}
    return preference_loss(name, **batch, **extra, **{**required(name), **hparams})


@pytest.mark.parametrize("hparams", [{}, {"beta": 0.5, "sft_weight": 0.3, "adadpo_length_normalize": False}])
@pytest.mark.parametrize("name", LOSSES)
def test_grad_balance_metric_matches_autograd(name, hparams):
    batch = moderate_pairs(seed=3)
    out = call(name, batch, **hparams)
    g_w, g_l = autograd_log_grads(out.losses, batch)
    expected = space_balance(g_w, g_l, batch, "policy")
    # Where both gradients vanish (hinge past its margin) autograd has 0/0; the metric reports the limit there.
    moving = (g_w != 0) | (g_l != 0)
    assert moving.sum() >= len(moving) // 2
    torch.testing.assert_close(out.metrics["grad_balance"][moving], expected[moving], rtol=1e-9, atol=0)
    torch.testing.assert_close(out.metrics["log_grad_balance"][moving], expected[moving].log(), rtol=0, atol=1e-9)
    assert not out.metrics["grad_balance"].requires_grad


def test_grad_balance_is_inf_when_the_rejected_gradient_is_zero():
    """ORPO with lambda = 0 is pure NLL on y_w: dL/dP_l = 0, so the balance is +inf (documented)."""
    batch = moderate_pairs(batch_size=4, seed=4)
    out = preference_loss("orpo", **batch, orpo_lambda=0.0)
    g_w, g_l = autograd_log_grads(out.losses, batch)
    assert torch.all(g_l == 0) and torch.all(g_w != 0)
    assert torch.isposinf(out.metrics["grad_balance"]).all()


def test_grad_balance_saturates_but_log_is_exact():
    """DPO's P_l/P_w for a 1000-nat gap is e^1000: grad_balance saturates at e^80, log_grad_balance stays exact."""
    batch = {
        "policy_chosen_logps": torch.tensor([-2000.0, -10.0]),
        "policy_rejected_logps": torch.tensor([-1000.0, -1010.0]),
        "chosen_lengths": torch.tensor([900, 9]),
        "rejected_lengths": torch.tensor([800, 800]),
        "ref_chosen_logps": torch.tensor([-1990.0, -12.0]),
        "ref_rejected_logps": torch.tensor([-990.0, -1000.0]),
    }
    out = preference_loss("dpo", **batch)
    torch.testing.assert_close(out.metrics["log_grad_balance"], torch.tensor([1000.0, -1000.0]))
    torch.testing.assert_close(out.metrics["grad_balance"], torch.tensor([math.exp(80), math.exp(-80)]))
