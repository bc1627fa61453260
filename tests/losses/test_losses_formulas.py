"""Each base loss equals a direct transcription of its paper formula; MADPO's weight and alpha-DPO's margin."""

import math

import pytest
import torch
import torch.nn.functional as F

from adadpo.losses import AlphaMarginNormalizer, preference_loss


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(7)
    b = 16
    nw = torch.randint(1, 300, (b,), generator=g)
    nl = torch.randint(1, 300, (b,), generator=g)
    lw = -nw * (0.1 + torch.rand(b, generator=g, dtype=torch.float64))
    ll = -nl * (0.1 + torch.rand(b, generator=g, dtype=torch.float64))
    return {
        "policy_chosen_logps": lw,
        "policy_rejected_logps": ll,
        "chosen_lengths": nw,
        "rejected_lengths": nl,
        "ref_chosen_logps": lw + 5 * torch.randn(b, generator=g, dtype=torch.float64),
        "ref_rejected_logps": ll + 5 * torch.randn(b, generator=g, dtype=torch.float64),
    }


def unpack(b):
    return (
        b["policy_chosen_logps"],
        b["policy_rejected_logps"],
        b["ref_chosen_logps"],
        b["ref_rejected_logps"],
        b["chosen_lengths"].double(),
        b["rejected_lengths"].double(),
    )


def close(got, want):
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_dpo(batch):
    lw, ll, rw, rl, _, _ = unpack(batch)
    out = preference_loss("dpo", **batch, beta=0.3)
    close(out.losses, -F.logsigmoid(0.3 * ((lw - rw) - (ll - rl))))
    close(out.chosen_rewards, 0.3 * (lw - rw))
    close(out.rejected_rewards, 0.3 * (ll - rl))
    close(out.metrics["beta_w"], torch.full_like(lw, 0.3))
    assert not out.metrics["clipped"].any()


def test_ipo_is_length_normalized_with_margin_one_over_two_tau(batch):
    lw, ll, rw, rl, nw, nl = unpack(batch)
    out = preference_loss("ipo", **batch, beta=0.25)
    close(out.losses, ((lw - rw) / nw - (ll - rl) / nl - 1 / (2 * 0.25)) ** 2)
    close(out.metrics["beta_w"], torch.ones_like(lw))  # the coefficient on each log-ratio is 1 (beta is tau)


def test_rdpo_uses_each_pairs_token_counts(batch):
    """R-DPO's length term is per pair (a known fork bug used the batch size as the length), with Park et al.'s sign."""
    lw, ll, rw, rl, nw, nl = unpack(batch)
    out = preference_loss("rdpo", **batch, beta=0.1, rdpo_alpha=0.01)
    close(out.losses, -F.logsigmoid(0.1 * ((lw - rw) - (ll - rl)) + 0.01 * (nw - nl)))
    batch_size_version = -F.logsigmoid(0.1 * ((lw - rw) - (ll - rl)) + 0.01 * (len(lw) - len(ll)))
    assert not torch.allclose(out.losses, batch_size_version)


@pytest.mark.parametrize("name", ["rdpo", "ada_rdpo"])
def test_rdpo_longer_chosen_answer_gets_a_lower_loss(name):
    """Park et al. (arXiv 2403.19159): implicit reward beta x + alpha |y|, so at equal log-ratios (Delta = 0) a
    chosen answer 100 tokens longer is already "explained" by length: -log sigma(+5) = 0.0067, not 5.0067."""

    def equal_log_ratio_pair(chosen_length, rejected_length):
        same = torch.full((1,), -50.0, dtype=torch.float64)
        logps = dict.fromkeys(("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps"), same)
        lengths = {
            "chosen_lengths": torch.tensor([chosen_length]),
            "rejected_lengths": torch.tensor([rejected_length]),
        }
        return preference_loss(name, **logps, ref_rejected_logps=same, **lengths, beta=0.1, rdpo_alpha=0.05).losses

    close(equal_log_ratio_pair(200, 100), torch.tensor([math.log1p(math.exp(-5.0))], dtype=torch.float64))
    assert abs(equal_log_ratio_pair(200, 100).item() - 0.006715348) < 1e-9
    assert abs(equal_log_ratio_pair(100, 200).item() - 5.006715348) < 1e-9


def chosen_nll(lw, nw, nll_average):
    """The chosen NLL per pair whose mean over pairs is the reference's: sum(-lw)/sum(|yw|), or mean(-lw/|yw|)."""
    return -lw / nw.mean() if nll_average == "batch" else -lw / nw


NLL_AVERAGES = ["batch", "pair"]


@pytest.mark.parametrize("nll_average", NLL_AVERAGES)
def test_cpo(batch, nll_average):
    lw, ll, _, _, nw, _ = unpack(batch)
    out = preference_loss("cpo", **batch, beta=0.2, cpo_alpha=0.8, nll_average=nll_average)
    close(out.losses, -F.logsigmoid(0.2 * (lw - ll)) + 0.8 * chosen_nll(lw, nw, nll_average))


@pytest.mark.parametrize("nll_average", NLL_AVERAGES)
def test_orpo_matches_the_direct_odds_formula(batch, nll_average):
    lw, ll, _, _, nw, nl = unpack(batch)
    out = preference_loss("orpo", **batch, beta=1.0, orpo_lambda=0.1, nll_average=nll_average)
    pw, pl = torch.exp(lw / nw), torch.exp(ll / nl)
    odds_w, odds_l = torch.log(pw / (1 - pw)), torch.log(pl / (1 - pl))
    close(out.losses, chosen_nll(lw, nw, nll_average) + 0.1 * (-F.logsigmoid(1.0 * (odds_w - odds_l))))


@pytest.mark.parametrize("nll_average", NLL_AVERAGES)
def test_simpo_with_and_without_sft(batch, nll_average):
    lw, ll, _, _, nw, nl = unpack(batch)
    for sft in (0.0, 0.5):
        out = preference_loss("simpo", **batch, beta=2.5, simpo_gamma=1.4, sft_weight=sft, nll_average=nll_average)
        want = -F.logsigmoid(2.5 * lw / nw - 2.5 * ll / nl - 1.4) + sft * chosen_nll(lw, nw, nll_average)
        close(out.losses, want)
        close(out.chosen_rewards, 2.5 * lw / nw)


def test_nll_batch_average_is_the_micro_batch_token_average():
    """Lengths 1 and 99 with per-token NLL 0.5 and 1.0: the micro-batch token average is 99.5/100 = 0.995 (TRL,
    official SimPO); the per-pair average is (0.5 + 1.0)/2 = 0.75. Both are ORPO's NLL at orpo_lambda = 0."""
    pairs = {
        "policy_chosen_logps": torch.tensor([-0.5, -99.0], dtype=torch.float64),
        "policy_rejected_logps": torch.tensor([-3.0, -120.0], dtype=torch.float64),
        "chosen_lengths": torch.tensor([1, 99]),
        "rejected_lengths": torch.tensor([2, 100]),
    }
    for nll_average, want in (("batch", 0.995), ("pair", 0.75)):
        out = preference_loss("orpo", **pairs, orpo_lambda=0.0, nll_average=nll_average)
        assert abs(out.losses.mean().item() - want) < 1e-12, nll_average


def reference_madpo_weight(h, c_max=2.0, c_min=0.5, lam=1.0, tau=math.log(999)):
    """The MADPO author's reference formula, written with plain exp (fine for moderate |h|)."""
    c = c_min + (c_max - c_min) / (1 + (c_max - 1) / (1 - c_min) * math.exp(lam * (abs(h) - tau)))
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    return sig(c * h) / sig(h) if h > -tau else 1.0


def test_madpo_weight_and_loss(batch):
    lw, ll, rw, rl, _, _ = unpack(batch)
    margins = torch.linspace(-12, 12, len(lw), dtype=torch.float64)
    out = preference_loss("madpo", **batch, reward_margins=margins, beta=0.1)
    want_w = torch.tensor([reference_madpo_weight(h) for h in margins.tolist()], dtype=torch.float64)
    close(out.metrics["madpo_weight"], want_w)
    close(out.losses, -want_w * F.logsigmoid(0.1 * ((lw - rw) - (ll - rl))))
    w = out.metrics["madpo_weight"]
    tau = math.log(999)
    hard = (margins > 0) & (margins < tau)
    easy = margins > tau
    assert hard.any() and easy.any() and (margins <= -tau).any()
    assert (w[hard] > 1).all() and (w[easy] < 1).all() and (w[margins <= -tau] == 1).all()


def test_madpo_hyperparameters_are_used(batch):
    margins = torch.tensor([0.5, 3.0, 8.0] * 5 + [1.0], dtype=torch.float64)
    out = preference_loss(
        "madpo", **batch, reward_margins=margins, madpo_c_max=4.0, madpo_c_min=0.25, madpo_lambda=2.0, madpo_tau=3.0
    )
    want = [reference_madpo_weight(h, 4.0, 0.25, 2.0, 3.0) for h in margins.tolist()]
    close(out.metrics["madpo_weight"], torch.tensor(want, dtype=torch.float64))
    # c_max = 1 switches the reweighting off (MADPO -> DPO), without a 0 * inf in the weight
    flat = preference_loss("madpo", **batch, reward_margins=margins * 1e3, madpo_c_max=1.0)
    close(flat.metrics["madpo_weight"], torch.ones_like(margins))


def test_alpha_dpo_margin_is_gamma_plus_alpha_times_normalized_margin(batch):
    lw, ll, rw, rl, nw, nl = unpack(batch)
    normalizer = AlphaMarginNormalizer(momentum=0.9)
    out = preference_loss(
        "alpha_dpo", **batch, beta=2.0, simpo_gamma=0.8, alpha_dpo_alpha=0.3, margin_normalizer=normalizer
    )
    m = 2.0 * ((lw - rw) / nw - (ll - rl) / nl)
    m_star = (m - m.mean()) / m.std()  # first batch initializes the running statistics
    close(out.metrics["alpha_margin"], m)
    close(out.metrics["alpha_margin_normalized"], m_star)
    close(out.losses, -F.logsigmoid(2.0 * lw / nw - 2.0 * ll / nl - (0.8 + 0.3 * m_star)))
    assert normalizer.num_updates == 1
    # evaluation: statistics are read, not updated
    state = normalizer.state_dict()
    preference_loss("alpha_dpo", **batch, margin_normalizer=normalizer, update_margin_stats=False)
    assert normalizer.state_dict() == state


def test_alpha_dpo_margin_is_stop_gradient(batch):
    b = dict(batch)
    b["policy_chosen_logps"] = b["policy_chosen_logps"].clone().requires_grad_(True)
    out = preference_loss("alpha_dpo", **b, beta=2.0, alpha_dpo_alpha=0.5, margin_normalizer=AlphaMarginNormalizer())
    (g_w,) = torch.autograd.grad(out.losses.sum(), [b["policy_chosen_logps"]])
    nw = b["chosen_lengths"].double()
    z = out.chosen_rewards - out.rejected_rewards - (0.5 + 0.5 * out.metrics["alpha_margin_normalized"])
    close(g_w, -2.0 / nw * torch.sigmoid(-z))  # the margin contributes no gradient


def test_reference_free_losses_ignore_reference_logps(batch):
    no_ref = {k: v for k, v in batch.items() if not k.startswith("ref_")}
    for name in ("cpo", "orpo", "simpo", "ada_cpo", "ada_orpo", "ada_simpo"):
        assert torch.equal(preference_loss(name, **batch).losses, preference_loss(name, **no_ref).losses)
