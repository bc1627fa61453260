"""`token_grad_balance`: the per-token gradient balance Stable AdaDPO equalises, checked against autograd."""

import pytest
import torch

from adadpo.losses import LOSS_SPECS, LOSSES, AlphaMarginNormalizer, preference_loss
from tests.helpers.losses import required


def _pairs(seed=0, batch=16):
    g = torch.Generator().manual_seed(seed)
    lengths_w = torch.randint(1, 60, (batch,), generator=g).double()
    lengths_l = torch.randint(1, 60, (batch,), generator=g).double()
    per_token = lambda: -torch.rand(batch, generator=g, dtype=torch.float64) * 3  # noqa: E731
    return lengths_w, lengths_l, per_token(), per_token(), per_token(), per_token()


def _loss(name, tw, tl, rtw, rtl, nw, nl, **hparams):
    """Loss on uniform sequences: every chosen token has log-prob tw (reference rtw), so lw = |yw| * tw."""
    extra = {}
    if LOSS_SPECS[name].needs_reward_margin:
        extra["reward_margins"] = torch.linspace(-2, 2, len(nw), dtype=torch.float64)
    if LOSS_SPECS[name].needs_margin_normalizer:
        extra["margin_normalizer"] = AlphaMarginNormalizer()
    ref = LOSS_SPECS[name].needs_reference
    return preference_loss(
        name,
        policy_chosen_logps=nw * tw,
        policy_rejected_logps=nl * tl,
        chosen_lengths=nw,
        rejected_lengths=nl,
        ref_chosen_logps=nw * rtw if ref else None,
        ref_rejected_logps=nl * rtl if ref else None,
        **extra,
        **{**required(name), **hparams},
    )


@pytest.mark.parametrize("name", LOSSES)
def test_token_balance_matches_autograd_per_token(name):
    nw, nl, tw, tl, rtw, rtl = _pairs()
    tw, tl = tw.requires_grad_(), tl.requires_grad_()
    out = _loss(name, tw, tl, rtw, rtl, nw, nl)
    grad_w, grad_l = torch.autograd.grad(out.losses.sum(), (tw, tl), allow_unused=True, materialize_grads=True)
    # d/d(token log q) = grad / |y| (the |y| equal tokens share it); d/dq = that / q, q = exp(token log q)
    space_w = tw - rtw if LOSS_SPECS[name].needs_reference else tw
    space_l = tl - rtl if LOSS_SPECS[name].needs_reference else tl
    expected = (grad_w.abs() / nw / space_w.exp()) / (grad_l.abs() / nl / space_l.exp())
    ok = grad_l.abs() > 1e-12
    torch.testing.assert_close(out.metrics["token_grad_balance"][ok], expected.detach()[ok], rtol=1e-6, atol=0)


def test_stable_adadpo_balances_tokens_and_dpo_does_not():
    nw, nl, tw, tl, rtw, rtl = _pairs(seed=1)
    ada = _loss("adadpo", tw, tl, rtw, rtl, nw, nl, adadpo_clip=None)
    torch.testing.assert_close(ada.metrics["token_grad_balance"], torch.ones_like(nw), rtol=1e-9, atol=0)
    dpo = _loss("dpo", tw, tl, rtw, rtl, nw, nl)
    # DPO: |dL/dlw| = |dL/dll|, so the per-token balance is x_l / x_w with x = token P/P_ref
    torch.testing.assert_close(dpo.metrics["token_grad_balance"], ((tl - rtl) - (tw - rtw)).exp(), rtol=1e-9, atol=0)
