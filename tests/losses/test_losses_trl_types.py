"""TRL 1.16's loss types and the DPOConfig options that change a loss, against TRL's own `DPOTrainer._compute_loss`
(called as installed, on the stub model of test_losses_vs_references.py): values and gradients with respect to every
per-token log-prob, float64, 1e-6. Alone, combined with `loss_weights`, under each `f_divergence_type`, with
`label_smoothing`, with LD-DPO's `ld_alpha` and WPO's `use_weighting` (both through our `sequence_logps` on the same
per-token log-probs). Their Ada- versions have no outside implementation: with beta_w forced to beta they must equal
their base (test_losses_adadpo.py), and unclipped they must hold the per-token balance at 1 (below)."""

import math

import pytest
import torch
import torch.nn.functional as F

from adadpo.losses import LOSS_SPECS, preference_loss
from adadpo.training.logps import sequence_logps
from tests.losses.test_losses_vs_references import (
    FusedHeadStub,
    Pairs,
    assert_same_loss_and_grads,
    close,
    trl_dpo_loss,
)


DPO_FORM = ["sigmoid", "hinge", "ipo", "exo_pair", "robust", "discopop", "sigmoid_norm"]
SEPARABLE = ["nca_pair", "bco_pair", "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "sft"]
ADA_OF_TRL_TYPES = ["ada_hinge", "ada_exo_pair", "ada_robust", "ada_discopop", "ada_sigmoid_norm"]
CHECKED_AGAINST_TRL = {*DPO_FORM, *SEPARABLE, *ADA_OF_TRL_TYPES} - {"sigmoid"}  # `sigmoid` is dpo's alias
SMOOTHING = {"exo_pair": 1e-3, "robust": 0.2, "aot": 0.2, "aot_unpaired": 0.2}  # EXO needs e > 0


def ours(pairs, name, **hparams):
    reference = any(
        LOSS_SPECS[n].needs_reference for n in ([name] if isinstance(name, str) else name) if n != "sigmoid"
    )
    return pairs.ours(name, reference=reference or name == "sigmoid", **hparams)


@pytest.mark.parametrize("name", DPO_FORM + SEPARABLE)
@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_each_trl_loss_type_equals_trl(name, beta):
    pairs = Pairs(seed=5)
    smoothing = SMOOTHING.get(name, 0.0)
    theirs, metrics = trl_dpo_loss(pairs, name, beta, label_smoothing=smoothing)
    out = ours(pairs, name, beta=beta, label_smoothing=smoothing)
    assert_same_loss_and_grads(pairs, out.losses.mean(), theirs, f"{name} vs TRL DPOTrainer(loss_type={name!r})")
    if name not in ("sft", "ipo", "sigmoid_norm"):  # TRL logs beta x log-ratio rewards for every type; these
        # report the scores their loss applies (per token for ipo and sigmoid_norm; sft has no reference)
        close(metrics["rewards/margins"][0], (out.chosen_rewards - out.rejected_rewards).mean(), f"{name} margins")


def test_sigmoid_is_dpo_one_implementation():
    pairs = Pairs(seed=6)
    torch.testing.assert_close(ours(pairs, "sigmoid").losses, ours(pairs, "dpo").losses, rtol=0, atol=0)
    assert preference_loss.__module__ and LOSS_SPECS.get("sigmoid") is None  # an alias, not a second entry


@pytest.mark.parametrize("name", [n for n in DPO_FORM if n != "sft"])
@pytest.mark.parametrize(
    "divergence, coef",
    [("forward_kl", 0.5), ("js_divergence", 0.5), ("alpha_divergence", 0.5), ("alpha_divergence", 1.5)],
)
def test_f_divergences_equal_trl(name, divergence, coef):
    # TRL 1.16's alpha_divergence has no float64 clamp (KeyError): that one is compared in float32
    pairs = Pairs(seed=7, dtype=torch.float32 if divergence == "alpha_divergence" else torch.float64)
    smoothing = SMOOTHING.get(name, 0.0)
    kw = {"f_divergence_type": divergence, "f_alpha_divergence_coef": coef, "label_smoothing": smoothing}
    theirs, _ = trl_dpo_loss(pairs, name, 0.3, **kw)
    out = ours(pairs, name, beta=0.3, **kw)
    assert_same_loss_and_grads(pairs, out.losses.mean(), theirs, f"{name} with {divergence}({coef}) vs TRL")


@pytest.mark.parametrize(
    "names, weights",
    [
        (["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0]),  # MPO
        (["apo_zero", "sft"], [1.0, 0.5]),
        (["ipo", "hinge", "aot"], [0.5, 2.0, 1.0]),
    ],
)
def test_loss_weights_combinations_equal_trl(names, weights):
    pairs = Pairs(seed=8)
    theirs, _ = trl_dpo_loss(pairs, names, 0.2, loss_weights=weights)
    out = pairs.ours(names, weights=weights, beta=0.2)
    assert_same_loss_and_grads(pairs, out.losses.mean(), theirs, f"{names} x {weights} vs TRL")
    first = pairs.ours(names[0], beta=0.2)  # the first loss's rewards are the ones reported
    torch.testing.assert_close(out.chosen_rewards, first.chosen_rewards)


@pytest.mark.parametrize("smoothing", [0.1, 0.3])
def test_label_smoothing_on_sigmoid_is_conservative_dpo(smoothing):
    """TRL 1.16's `sigmoid` ignores label_smoothing (only robust, exo_pair and aot read it); here it is cDPO, as the
    DPO authors define it: -(1-e) log sigma(z) - e log sigma(-z). Checked against that formula."""
    pairs, beta = Pairs(seed=9), 0.4
    z = beta * ((pairs.lw - pairs.rw) - (pairs.ll - pairs.rl))
    formula = (-(1 - smoothing) * F.logsigmoid(z) - smoothing * F.logsigmoid(-z)).mean()
    out = pairs.ours("sigmoid", beta=beta, label_smoothing=smoothing)
    assert_same_loss_and_grads(pairs, out.losses.mean(), formula, "cDPO vs its formula")
    plain, _ = trl_dpo_loss(pairs, "sigmoid", beta, label_smoothing=smoothing)
    assert abs(float(plain) - float(out.losses.mean())) > 1e-3  # TRL's sigmoid would have trained plain DPO


def _our_logps(pairs, **options):
    """Our `sequence_logps` over the same LM batch TRL sees (the same stub model), chunked into chosen/rejected."""
    attention, completion, shifted = pairs.lm_batch()
    log_sum_sq = options.pop("log_sum_sq_probs", None)
    model = FusedHeadStub(shifted * completion[:, 1:], log_sum_sq)
    batch = {"input_ids": torch.zeros_like(attention), "attention_mask": attention, "completion_mask": completion}
    return sequence_logps(model, batch, **options)


@pytest.mark.parametrize("ld_alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "apo_zero"])
def test_ld_alpha_equals_trl(ld_alpha, loss_type):
    """LD-DPO weights the log-probs past the shorter completion by ld_alpha, in policy and reference alike (TRL
    recomputes the reference with the same weights; here the reference log-probs are given, as precomputed)."""
    pairs = Pairs(seed=10)
    seq = _our_logps(pairs, ld_alpha=ld_alpha)
    lw, ll = seq.logps.chunk(2)
    theirs, _ = trl_dpo_loss(pairs, loss_type, 0.3, ld_alpha=ld_alpha)
    out = preference_loss(
        loss_type, policy_chosen_logps=lw, policy_rejected_logps=ll, chosen_lengths=pairs.nw,
        rejected_lengths=pairs.nl, ref_chosen_logps=pairs.rw, ref_rejected_logps=pairs.rl, beta=0.3,
    )  # fmt: skip
    assert_same_loss_and_grads(pairs, out.losses.mean(), theirs, f"{loss_type} with ld_alpha={ld_alpha} vs TRL")
    if ld_alpha == 1.0:
        torch.testing.assert_close(lw, pairs.lw)


@pytest.mark.parametrize("loss_type", ["sigmoid", "robust", "bco_pair", ["sigmoid", "bco_pair"]])
def test_wpo_weights_equal_trl(loss_type):
    pairs = Pairs(seed=12)
    attention, completion, shifted = pairs.lm_batch()
    g = torch.Generator().manual_seed(3)
    log_sum_sq = -(0.5 + torch.rand(shifted.shape, generator=g, dtype=torch.float64))  # log sum_v p_v^2 <= 0
    seq = _our_logps(pairs, wpo=True, log_sum_sq_probs=log_sum_sq)
    lw, ll = seq.logps.chunk(2)
    log_w = seq.wpo_log_weights.chunk(2)
    smoothing = 0.2 if loss_type == "robust" else 0.0
    theirs, _ = trl_dpo_loss(pairs, loss_type, 0.3, use_weighting=True, log_sum_sq_probs=log_sum_sq,
                             label_smoothing=smoothing)  # fmt: skip
    out = preference_loss(
        loss_type, policy_chosen_logps=lw, policy_rejected_logps=ll, chosen_lengths=pairs.nw,
        rejected_lengths=pairs.nl, ref_chosen_logps=pairs.rw, ref_rejected_logps=pairs.rl, beta=0.3,
        label_smoothing=smoothing, pair_log_weights=log_w[0] + log_w[1],
    )  # fmt: skip
    assert_same_loss_and_grads(pairs, out.losses.mean(), theirs, f"{loss_type} with WPO weights vs TRL")
    assert not math.isclose(float(log_w[0].exp().mean()), 1.0)  # the weights are not trivially 1


@pytest.mark.parametrize("name", ["adadpo", "ada_ipo", "ada_rdpo", *ADA_OF_TRL_TYPES])
@pytest.mark.parametrize("divergence", ["reverse_kl", "js_divergence"])
def test_unclipped_stable_ada_losses_hold_the_token_balance_at_one(name, divergence):
    """The property the Ada- versions exist for: with the Stable (per-token) ratio balance and no clip, the
    per-token gradient on the chosen response equals the one on the rejected response, under any f-divergence
    score (its slope enters beta_w). The metric is checked against autograd in test_losses_token_balance.py."""
    pairs = Pairs(seed=13)
    hparams = {"beta": 0.3, "adadpo_clip": None, "f_divergence_type": divergence}
    hparams |= {"label_smoothing": 1e-3} if name == "ada_exo_pair" else {}
    hparams |= {"rdpo_alpha": 0.01} if name == "ada_rdpo" else {}
    if name == "ada_rdpo":
        hparams.pop("f_divergence_type")
    out = pairs.ours(name, **hparams)
    balance = out.metrics["token_grad_balance"]
    torch.testing.assert_close(balance, torch.ones_like(balance), rtol=1e-6, atol=0)
    base = LOSS_SPECS[name].base
    base_hparams = {k: v for k, v in hparams.items() if k in LOSS_SPECS[base].hparams}
    plain = pairs.ours(base, **base_hparams).metrics["token_grad_balance"]
    assert (plain - 1).abs().max() > 1e-2  # the base loss does not hold it


def test_wpo_weights_on_the_sft_term_weigh_its_batch_nll():
    """TRL 1.16 crashes on `use_weighting` with `sft` (an in-place product on an expanded tensor); the meaning it
    intends, each pair's weight times the batch's token-mean NLL, is what ours computes."""
    pairs = Pairs(seed=14)
    log_w = torch.linspace(-2.0, 0.0, len(pairs.nw), dtype=torch.float64)
    out = pairs.ours("sft", reference=False, pair_log_weights=log_w)
    nll = -pairs.lw.sum() / pairs.nw.sum()
    assert_same_loss_and_grads(pairs, out.losses.mean(), (log_w.exp() * nll).mean(), "WPO x sft vs its formula")
