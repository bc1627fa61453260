"""AdaDPO against the paper's Listing 1, its stop-gradient, and its reductions (issue 2, tests 1, 3, 4)."""

import pytest
import torch
import torch.nn.functional as F

from adadpo.losses import LOSSES, AlphaMarginNormalizer, preference_loss


def realistic_batch(batch_size=64, seed=0, dtype=torch.float32, max_len=1000):
    """Summed logps of completions of 1..max_len tokens at -0.2..-2 nats/token; per-token log-ratios ~ N(0, 0.5)."""
    g = torch.Generator().manual_seed(seed)
    nw = torch.randint(1, max_len + 1, (batch_size,), generator=g)
    nl = torch.randint(1, max_len + 1, (batch_size,), generator=g)
    lw = -nw * (0.2 + 1.8 * torch.rand(batch_size, generator=g, dtype=torch.float64))
    ll = -nl * (0.2 + 1.8 * torch.rand(batch_size, generator=g, dtype=torch.float64))
    rw = lw + nw * 0.5 * torch.randn(batch_size, generator=g, dtype=torch.float64)
    rl = ll + nl * 0.5 * torch.randn(batch_size, generator=g, dtype=torch.float64)
    return {
        "policy_chosen_logps": lw.to(dtype),
        "policy_rejected_logps": ll.to(dtype),
        "chosen_lengths": nw,
        "rejected_lengths": nl,
        "ref_chosen_logps": rw.to(dtype),
        "ref_rejected_logps": rl.to(dtype),
    }


def with_grad(batch):
    out = dict(batch)
    out["policy_chosen_logps"] = batch["policy_chosen_logps"].clone().requires_grad_(True)
    out["policy_rejected_logps"] = batch["policy_rejected_logps"].clone().requires_grad_(True)
    return out


def listing_1(pc, pr, rc, rr, lc, lr, beta, clip):
    """Stable AdaDPO, transcribed line by line from the paper's Listing 1."""
    log_ratio = ((pc - rc) / lc - (pr - rr) / lr).detach()
    beta_w = beta * torch.clamp(torch.exp(log_ratio), max=clip)
    logits = beta_w * (pc - rc) - beta * (pr - rr)
    losses = -F.logsigmoid(logits)
    return losses, beta_w


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("beta,clip", [(0.1, 2.0), (0.01, 2.0), (0.5, 1.5)])
def test_adadpo_default_equals_listing_1(beta, clip, dtype):
    batch = with_grad(realistic_batch(dtype=dtype))
    out = preference_loss("adadpo", **batch, beta=beta, adadpo_clip=clip)
    expected, beta_w = listing_1(
        batch["policy_chosen_logps"],
        batch["policy_rejected_logps"],
        batch["ref_chosen_logps"],
        batch["ref_rejected_logps"],
        batch["chosen_lengths"],
        batch["rejected_lengths"],
        beta,
        clip,
    )
    # float32 sums of ~-1000 nats carry ~1e-4 absolute rounding, so there the bound is relative
    torch.testing.assert_close(out.losses, expected, **({"rtol": 0, "atol": 1e-6} if dtype == torch.float64 else {}))
    torch.testing.assert_close(out.metrics["beta_w"], beta_w, rtol=1e-6, atol=0)
    assert out.metrics["clipped"].dtype == torch.bool
    assert out.metrics["clipped"].any() and not out.metrics["clipped"].all()  # the batch exercises both branches
    (g_out_w, g_out_l) = torch.autograd.grad(
        out.losses.sum(), [batch["policy_chosen_logps"], batch["policy_rejected_logps"]]
    )
    (g_ref_w, g_ref_l) = torch.autograd.grad(
        expected.sum(), [batch["policy_chosen_logps"], batch["policy_rejected_logps"]]
    )
    torch.testing.assert_close(g_out_w, g_ref_w, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g_out_l, g_ref_l, rtol=1e-5, atol=1e-7)
    x_w = batch["policy_chosen_logps"] - batch["ref_chosen_logps"]
    torch.testing.assert_close(out.chosen_rewards, (beta_w * x_w).detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("length_normalize", [True, False])
@pytest.mark.parametrize("balance", ["ratio", "policy"])
def test_stop_gradient_gradient_is_closed_form_with_beta_w_constant(length_normalize, balance):
    batch = with_grad(realistic_batch(batch_size=32, seed=1, dtype=torch.float64, max_len=50))
    out = preference_loss(
        "adadpo", **batch, beta=0.1, adadpo_clip=None, adadpo_length_normalize=length_normalize, adadpo_balance=balance
    )
    beta_w = out.metrics["beta_w"]
    assert not beta_w.requires_grad and beta_w.grad_fn is None
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    g_w, g_l = torch.autograd.grad(out.losses.sum(), [batch["policy_chosen_logps"], batch["policy_rejected_logps"]])
    x_w = (batch["policy_chosen_logps"] - batch["ref_chosen_logps"]).detach()
    x_l = (batch["policy_rejected_logps"] - batch["ref_rejected_logps"]).detach()
    z = beta_w * x_w - 0.1 * x_l
    # beta_w held constant: d/dlw [-log sigma(beta_w x_w - beta x_l)] = -beta_w sigma(-z); d/dll = beta sigma(-z)
    torch.testing.assert_close(g_w, -beta_w * torch.sigmoid(-z), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(g_l, 0.1 * torch.sigmoid(-z), rtol=1e-12, atol=1e-15)
    assert not torch.allclose(beta_w, torch.full_like(beta_w, 0.1))  # it really adapts


def test_adadpo_scale_multiplies_beta_w_by_k():
    batch = realistic_batch(batch_size=16, seed=2, dtype=torch.float64, max_len=100)
    base = preference_loss("adadpo", **batch, adadpo_clip=None)
    for k in (0.25, 3.0):
        scaled = preference_loss("adadpo", **batch, adadpo_clip=None, adadpo_scale=k)
        torch.testing.assert_close(scaled.metrics["beta_w"], k * base.metrics["beta_w"], rtol=1e-12, atol=0)
        x_w = batch["policy_chosen_logps"] - batch["ref_chosen_logps"]
        x_l = batch["policy_rejected_logps"] - batch["ref_rejected_logps"]
        expected = -F.logsigmoid(k * base.metrics["beta_w"] * x_w - 0.1 * x_l)
        torch.testing.assert_close(scaled.losses, expected, rtol=1e-12, atol=1e-12)


def test_clip_one_with_positive_log_ratio_is_dpo():
    batch = with_grad(realistic_batch(batch_size=32, seed=3, dtype=torch.float64))
    # make every per-token log-ratio difference positive
    batch["ref_chosen_logps"] = batch["policy_chosen_logps"].detach() - batch["chosen_lengths"] * 0.3
    batch["ref_rejected_logps"] = batch["policy_rejected_logps"].detach() + batch["rejected_lengths"] * 0.3
    out = preference_loss("adadpo", **batch, beta=0.2, adadpo_clip=1.0)
    dpo = preference_loss("dpo", **batch, beta=0.2)
    assert out.metrics["clipped"].all()
    torch.testing.assert_close(out.losses, dpo.losses, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.metrics["beta_w"], torch.full_like(out.metrics["beta_w"], 0.2))
    grads = torch.autograd.grad(out.losses.sum(), [batch["policy_chosen_logps"], batch["policy_rejected_logps"]])
    dpo_grads = torch.autograd.grad(dpo.losses.sum(), [batch["policy_chosen_logps"], batch["policy_rejected_logps"]])
    for got, want in zip(grads, dpo_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


ADA_TO_BASE = {
    "adadpo": "dpo",
    "ada_ipo": "ipo",
    "ada_rdpo": "rdpo",
    "ada_cpo": "cpo",
    "ada_orpo": "orpo",
    "ada_simpo": "simpo",
    "ada_hinge": "hinge",
    "ada_exo_pair": "exo_pair",
    "ada_robust": "robust",
    "ada_discopop": "discopop",
    "ada_sigmoid_norm": "sigmoid_norm",
}


def test_every_ada_loss_has_a_base():
    assert sorted(n for n in LOSSES if n.startswith("ada")) == sorted(ADA_TO_BASE)


@pytest.mark.parametrize("length_normalize", [True, False])
@pytest.mark.parametrize("ada,base", sorted(ADA_TO_BASE.items()))
def test_ada_with_ratio_forced_to_one_equals_base(ada, base, length_normalize):
    batch = with_grad(realistic_batch(batch_size=24, seed=4, dtype=torch.float64, max_len=30))
    hp = {"beta": 0.3, "rdpo_alpha": 0.02, "cpo_alpha": 0.7, "orpo_lambda": 0.4, "simpo_gamma": 0.3, "sft_weight": 0.2}
    hp |= {"label_smoothing": 0.1, "discopop_tau": 0.05}  # EXO needs e > 0; robust and cDPO read it too
    # C = 1 and a huge k force beta_w / beta_l = min(k * ratio, 1) = 1 on every pair
    ada_out = preference_loss(
        ada, **batch, **hp, adadpo_clip=1.0, adadpo_scale=1e25, adadpo_length_normalize=length_normalize
    )
    base_out = preference_loss(base, **batch, **hp)
    torch.testing.assert_close(ada_out.metrics["beta_w"], base_out.metrics["beta_w"], rtol=0, atol=0)
    torch.testing.assert_close(ada_out.losses, base_out.losses, rtol=0, atol=1e-12)
    torch.testing.assert_close(ada_out.chosen_rewards, base_out.chosen_rewards, rtol=0, atol=1e-12)
    leaves = [batch["policy_chosen_logps"], batch["policy_rejected_logps"]]
    for got, want in zip(
        torch.autograd.grad(ada_out.losses.sum(), leaves), torch.autograd.grad(base_out.losses.sum(), leaves)
    ):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_alpha_dpo_with_alpha_zero_equals_simpo():
    batch = with_grad(realistic_batch(batch_size=16, seed=5))
    out = preference_loss(
        "alpha_dpo", **batch, beta=2.5, simpo_gamma=1.4, alpha_dpo_alpha=0.0, margin_normalizer=AlphaMarginNormalizer()
    )
    simpo = preference_loss("simpo", **batch, beta=2.5, simpo_gamma=1.4)
    assert torch.equal(out.losses, simpo.losses)
    leaves = [batch["policy_chosen_logps"], batch["policy_rejected_logps"]]
    for got, want in zip(
        torch.autograd.grad(out.losses.sum(), leaves), torch.autograd.grad(simpo.losses.sum(), leaves)
    ):
        assert torch.equal(got, want)
