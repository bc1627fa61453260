"""Every loss against an implementation we did not write, values and gradients in float64 to 1e-6 (issue 14).

- TRL 1.16's own code, called as it is installed: `DPOTrainer._compute_loss` (sigmoid, ipo) on a stub model that
  returns given per-token log-probs, and `CPOTrainer` / `ORPOTrainer` (in `trl.experimental` since TRL 1.x):
  `cpo_loss`, `odds_ratio_loss` and `get_batch_loss_metrics`, whose NLL terms run through `concatenated_forward` on a
  stub model whose logits give those log-probs. A TRL upgrade that changes a peer's semantics fails here by name.
- The official SimPO, alpha-DPO and MADPO code cannot be installed (TRL 0.9 forks, notebooks); their loss functions
  are transcribed below from reading them, each citing repository, commit and lines.
- R-DPO has no released code; it is checked through TRL's DPO with a length-penalised reference (same loss, exactly).
- The Ada- losses have no outside implementation: they are checked against docs/losses.md's formulas here, and
  against the balance property in test_losses_balance.py and test_losses_token_balance.py.
"""

import math
import warnings
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from trl.trainer.dpo_trainer import DPOTrainer

from adadpo.losses import LOSS_HPARAM_DEFAULTS, LOSSES, AlphaMarginNormalizer, preference_loss


with warnings.catch_warnings():  # trl.experimental warns that its API may change: these tests are how we notice
    warnings.simplefilter("ignore")
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

TOL = {"rtol": 1e-6, "atol": 1e-6}
TOL_FLOAT32 = {"rtol": 1e-5, "atol": 1e-5}  # where TRL itself can only run in float32


def close(got, want, what):
    """Values (tensors or floats, e.g. TRL's logged metrics) compared in float64 (from float32: looser)."""
    tol = TOL_FLOAT32 if torch.as_tensor(want).dtype == torch.float32 else TOL
    got, want = (torch.as_tensor(v).to(torch.float64) for v in (got, want))
    torch.testing.assert_close(got, want, **tol, msg=lambda m: f"{what}: {m}")


# ---- Inputs: per-token log-probs as autograd leaves, laid out as a causal LM batch -------------------------------


class Pairs:
    """B pairs of per-token log-probs (leaves) for prompt, chosen and rejected tokens, and reference logps.

    A row of the LM batch is [prompt][completion][padding]; the log-prob of token t sits at shifted position t - 1
    (what logits[:, t - 1] predict). Lengths include 1 and every chosen/rejected length differs at least once.
    """

    def __init__(self, seed=0, prompt_lengths=(1, 1, 1, 1, 1, 1), dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        self.nw = torch.tensor([1, 3, 7, 12, 5, 9])
        self.nl = torch.tensor([4, 1, 7, 6, 11, 2])
        self.np = torch.tensor(prompt_lengths)
        b, width = len(self.nw), int(max(self.nw.max(), self.nl.max()))

        def leaves(n_cols):
            return (-(0.05 + 1.4 * torch.rand(b, n_cols, generator=g, dtype=torch.float64))).to(dtype).requires_grad_()

        self.tok_w, self.tok_l, self.tok_p = leaves(width), leaves(width), leaves(int(self.np.max()))
        self.mask_w = torch.arange(width) < self.nw[:, None]
        self.mask_l = torch.arange(width) < self.nl[:, None]
        self.rw = self.lw.detach() + 3 * torch.randn(b, generator=g, dtype=torch.float64).to(dtype)
        self.rl = self.ll.detach() + 3 * torch.randn(b, generator=g, dtype=torch.float64).to(dtype)
        self.seq_len = int((self.np + torch.maximum(self.nw, self.nl)).max())

    @property
    def lw(self):
        return (self.tok_w * self.mask_w).sum(1)

    @property
    def ll(self):
        return (self.tok_l * self.mask_l).sum(1)

    @property
    def leaves(self):
        return [self.tok_w, self.tok_l, self.tok_p]

    def ours(self, name, reference=True, weights=None, **hparams):
        kwargs = {"ref_chosen_logps": self.rw, "ref_rejected_logps": self.rl} if reference else {}
        kwargs |= {"weights": weights} if weights is not None else {}
        return preference_loss(
            name,
            policy_chosen_logps=self.lw,
            policy_rejected_logps=self.ll,
            chosen_lengths=self.nw,
            rejected_lengths=self.nl,
            **kwargs,
            **hparams,
        )

    def grads(self, loss):
        """d loss / d every per-token leaf (zeros for leaves the loss does not read)."""
        return torch.autograd.grad(loss, self.leaves, retain_graph=True, allow_unused=True, materialize_grads=True)

    def rows(self, chosen):
        """Masks of one side's LM rows: (attention, completion) of shape (B, seq_len), and the shifted log-probs."""
        n, tok = (self.nw, self.tok_w) if chosen else (self.nl, self.tok_l)
        pos = torch.arange(self.seq_len)
        prompt = pos < self.np[:, None]
        completion = ~prompt & (pos < (self.np + n)[:, None])
        shifted = torch.zeros(len(n), self.seq_len - 1, dtype=tok.dtype)
        for i in range(len(n)):  # token t (t >= 1) is predicted at position t - 1
            p, m = int(self.np[i]), int(n[i])
            shifted[i, : p - 1] = self.tok_p[i, 1:p]
            shifted[i, p - 1 : p - 1 + m] = tok[i, :m]
        return (prompt | completion).long(), completion.long(), shifted

    def lm_batch(self):
        """Both sides stacked [chosen; rejected] as TRL's trainers stack them."""
        (att_w, comp_w, lp_w), (att_l, comp_l, lp_l) = self.rows(True), self.rows(False)
        return torch.cat([att_w, att_l]), torch.cat([comp_w, comp_l]), torch.cat([lp_w, lp_l])


class IdentityAccelerator:
    """One process: gathers return their input."""

    device = torch.device("cpu")

    @staticmethod
    def gather(t):
        return t

    gather_for_metrics = gather


# ---- TRL's DPOTrainer._compute_loss --------------------------------------------------------------------------------


class FusedHeadStub(torch.nn.Module):
    """Stands in for a model under TRL's fused LM head: `log_probs` are the given per-token log-probs (0 where there
    is no completion label, as the fused head returns them), `log_sum_sq_probs` (WPO's) the given ones or zeros, the
    other diagnostics zeros."""

    def __init__(self, log_probs, log_sum_sq_probs=None):
        super().__init__()
        self.log_probs = log_probs
        self.log_sum_sq_probs = torch.zeros_like(log_probs) if log_sum_sq_probs is None else log_sum_sq_probs

    def forward(self, input_ids, attention_mask, labels, fused_lm_head, use_cache):
        assert fused_lm_head and input_ids.shape == labels.shape
        zeros = torch.zeros_like(self.log_probs)
        return SimpleNamespace(
            log_probs=self.log_probs,
            log_sum_sq_probs=self.log_sum_sq_probs,
            entropy=zeros,
            mean_logits=zeros,
            is_top1=zeros.bool(),
        )


def trl_dpo_loss(
    pairs,
    loss_type,
    beta,
    ref_chosen=None,
    ref_rejected=None,
    *,
    loss_weights=None,
    label_smoothing=0.0,
    f_divergence_type="reverse_kl",
    f_alpha_divergence_coef=0.5,
    ld_alpha=None,
    use_weighting=False,
    log_sum_sq_probs=None,
    discopop_tau=0.05,
):
    """TRL 1.16's DPO loss as `DPOTrainer._compute_loss` computes it, with precomputed reference log-probs and the
    options of its DPOConfig that change the loss."""
    attention, completion, shifted = pairs.lm_batch()
    completion_logps = shifted * completion[:, 1:]  # the fused head gives 0 where labels are -100
    loss_types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=IdentityAccelerator(),
        aux_loss_enabled=False,
        ld_alpha=ld_alpha,
        precompute_ref_logps=True,
        f_divergence_type=f_divergence_type,
        f_alpha_divergence_coef=f_alpha_divergence_coef,
        loss_types=loss_types,
        loss_weights=loss_weights or [1.0] * len(loss_types),
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=use_weighting,
        args=SimpleNamespace(discopop_tau=discopop_tau),
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros_like(attention),
        "attention_mask": attention,
        "completion_mask": completion,
        "ref_chosen_logps": pairs.rw if ref_chosen is None else ref_chosen,
        "ref_rejected_logps": pairs.rl if ref_rejected is None else ref_rejected,
    }
    model = FusedHeadStub(completion_logps, log_sum_sq_probs)
    loss = DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, trainer._metrics["train"]


def assert_same_loss_and_grads(pairs, ours, theirs, what):
    close(ours, theirs, f"{what} value")
    for name, g_ours, g_theirs in zip(("chosen", "rejected", "prompt"), pairs.grads(ours), pairs.grads(theirs)):
        close(g_ours, g_theirs, f"{what} gradient w.r.t. the {name} token log-probs")


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_equals_trl_dpo_trainer_sigmoid(beta):
    pairs = Pairs()
    out = pairs.ours("dpo", beta=beta)
    theirs, metrics = trl_dpo_loss(pairs, "sigmoid", beta)
    assert_same_loss_and_grads(pairs, out.losses.mean(), theirs, "dpo vs TRL DPOTrainer(loss_type='sigmoid')")
    close(metrics["rewards/margins"][0], (out.chosen_rewards - out.rejected_rewards).mean(), "margins")


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_ipo_equals_trl_dpo_trainer_ipo(beta):
    pairs = Pairs(seed=1)
    theirs, _ = trl_dpo_loss(pairs, "ipo", beta)
    assert_same_loss_and_grads(pairs, pairs.ours("ipo", beta=beta).losses.mean(), theirs, "ipo vs TRL ipo")


def test_rdpo_equals_trl_dpo_with_a_length_penalised_reference():
    """Park et al.'s R-DPO is DPO with reward r(x, y) - alpha |y|, i.e. with reference log-probs r - (alpha/beta)|y|:
    beta[(lw - rw) - (ll - rl)] + alpha(|yw| - |yl|) = beta[(lw - (rw - a|yw|)) - (ll - (rl - a|yl|))], a = alpha/beta.
    No R-DPO code was released, so TRL's DPO on that reference is the outside implementation; the sign matters."""
    pairs, beta, alpha = Pairs(seed=2), 0.1, 0.05
    ref_w = pairs.rw - alpha / beta * pairs.nw
    ref_l = pairs.rl - alpha / beta * pairs.nl
    theirs, _ = trl_dpo_loss(pairs, "sigmoid", beta, ref_w, ref_l)
    ours = pairs.ours("rdpo", beta=beta, rdpo_alpha=alpha).losses.mean()
    assert_same_loss_and_grads(pairs, ours, theirs, "rdpo vs TRL DPO with reference r - (alpha/beta)|y|")


# ---- TRL's CPOTrainer and ORPOTrainer (trl.experimental) -------------------------------------------------------------


class LogitsStub(torch.nn.Module):
    """Stands in for a causal LM: 2-token vocabulary, every label is token 0, and the logits at position t make
    log softmax(logits[t])[0] equal the given log-prob of token t + 1: logits = (logit(e^q), 0)."""

    def __init__(self, shifted_logps):
        super().__init__()
        q = F.pad(shifted_logps, (0, 1))  # the last position predicts nothing
        q = torch.where(q == 0, -1.0, q)  # positions without a given log-prob (never a label): any finite logit
        self.logits = torch.stack([q - torch.log(-torch.expm1(q)), torch.zeros_like(q)], dim=-1)

    def forward(self, input_ids, attention_mask, use_cache):
        assert input_ids.shape == self.logits.shape[:2]
        return SimpleNamespace(logits=self.logits)


def trl_pair_trainer(cls, **attributes):
    """A CPOTrainer / ORPOTrainer with only what its loss path reads set (no model, data or optimizer)."""
    trainer = cls.__new__(cls)
    defaults = {"accelerator": IdentityAccelerator(), "is_encoder_decoder": False, "aux_loss_enabled": False}
    defaults |= {"pad_token_id": 0, "padding_value": 0}
    for key, value in {**defaults, "label_smoothing": 0.0, "alpha": 0.0, **attributes}.items():
        setattr(trainer, key, value)
    return trainer


def trl_full_loss(trainer, pairs):
    """`get_batch_loss_metrics` on the LM batch: TRL's whole loss, pairwise term plus NLL, and its metrics."""
    batch = {}
    for side, chosen in (("chosen", True), ("rejected", False)):
        attention, completion, _ = pairs.rows(chosen)
        batch[f"{side}_input_ids"] = torch.zeros_like(attention)
        batch[f"{side}_attention_mask"] = attention
        batch[f"{side}_labels"] = torch.where(completion.bool(), 0, -100)
    shifted = pairs.lm_batch()[2]
    return trainer.get_batch_loss_metrics(LogitsStub(shifted), batch)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_cpo_pairwise_term_equals_trl_cpo_loss_sigmoid(beta):
    pairs = Pairs(seed=3)
    trainer = trl_pair_trainer(CPOTrainer, loss_type="sigmoid", beta=beta)
    theirs, chosen_rewards, _ = trainer.cpo_loss(pairs.lw, pairs.ll)
    out = pairs.ours("cpo", reference=False, beta=beta, cpo_alpha=0.0)
    for i in range(len(pairs.nw)):  # per pair: value and gradient
        assert_same_loss_and_grads(pairs, out.losses[i], theirs[i], f"cpo pair {i} vs TRL cpo_loss('sigmoid')")
    close(out.chosen_rewards, chosen_rewards, "cpo chosen rewards")


@pytest.mark.parametrize("beta,gamma", [(2.5, 1.4), (10.0, 3.0)])
def test_simpo_pairwise_term_equals_trl_cpo_loss_simpo(beta, gamma):
    """TRL's `simpo_gamma` is gamma itself (it divides by beta), like ours; logps are per-token means."""
    pairs = Pairs(seed=4)
    trainer = trl_pair_trainer(CPOTrainer, loss_type="simpo", beta=beta, simpo_gamma=gamma)
    theirs, chosen_rewards, _ = trainer.cpo_loss(pairs.lw / pairs.nw, pairs.ll / pairs.nl)
    out = pairs.ours("simpo", reference=False, beta=beta, simpo_gamma=gamma, sft_weight=0.0)
    for i in range(len(pairs.nw)):
        assert_same_loss_and_grads(pairs, out.losses[i], theirs[i], f"simpo pair {i} vs TRL cpo_loss('simpo')")
    close(out.chosen_rewards, chosen_rewards, "simpo chosen rewards")


@pytest.mark.parametrize("loss_type", ["sigmoid", "simpo"])
def test_cpo_and_cpo_simpo_with_nll_equal_trl_cpo_trainer(loss_type):
    """The whole loss, NLL included: TRL's CPO NLL is a cross-entropy over every chosen completion token of the
    micro-batch (sum(-lw) / sum(|yw|)), our default nll_average='batch'."""
    pairs, beta, cpo_alpha, gamma = Pairs(seed=5), (0.2 if loss_type == "sigmoid" else 2.5), 0.8, 1.2
    trainer = trl_pair_trainer(CPOTrainer, loss_type=loss_type, beta=beta, cpo_alpha=cpo_alpha, simpo_gamma=gamma)
    theirs, metrics = trl_full_loss(trainer, pairs)
    if loss_type == "sigmoid":
        ours = pairs.ours("cpo", reference=False, beta=beta, cpo_alpha=cpo_alpha)
    else:
        ours = pairs.ours("simpo", reference=False, beta=beta, simpo_gamma=gamma, sft_weight=cpo_alpha)
    assert_same_loss_and_grads(pairs, ours.losses.mean(), theirs, f"TRL CPOTrainer(loss_type={loss_type!r})")
    want_nll = -pairs.lw.sum() / pairs.nw.sum()
    close(metrics["nll_loss"], want_nll.detach(), "TRL's CPO NLL")
    per_pair_nll = (-pairs.lw / pairs.nw).mean().item()  # nll_average="pair": another number on unequal lengths
    assert abs(per_pair_nll - metrics["nll_loss"]) > 1e-3


def test_orpo_odds_ratio_term_equals_trl_odds_ratio_loss():
    """TRL's ORPO `beta` is our orpo_lambda; its odds use the mean-token log-prob; our beta = 1 is the paper's term.
    (TRL computes this term in float32, hence compare in float32-sized steps: still within 1e-6 here.)"""
    pairs, lam = Pairs(seed=6), 0.25
    trainer = trl_pair_trainer(ORPOTrainer, beta=lam)
    theirs = -trainer.odds_ratio_loss(pairs.lw / pairs.nw, pairs.ll / pairs.nl)[0]
    out = pairs.ours("orpo", reference=False, beta=1.0, orpo_lambda=lam)
    ours = out.losses - (-pairs.lw / pairs.nw.double().mean())  # minus our NLL (checked with TRL's below)
    for i in range(len(pairs.nw)):
        assert_same_loss_and_grads(pairs, ours[i], theirs[i].double(), f"orpo pair {i} vs TRL odds_ratio_loss")


def test_orpo_equals_trl_orpo_trainer_when_the_prompt_is_one_token():
    """The whole ORPO loss through TRL's `concatenated_forward`. TRL's NLL covers the prompt too, minus the first
    token (which nothing predicts), so with a one-token prompt the two NLLs are the same tokens."""
    pairs, lam = Pairs(seed=7), 0.5
    theirs, _ = trl_full_loss(trl_pair_trainer(ORPOTrainer, beta=lam), pairs)
    ours = pairs.ours("orpo", reference=False, beta=1.0, orpo_lambda=lam).losses.mean()
    assert_same_loss_and_grads(pairs, ours, theirs, "orpo vs TRL ORPOTrainer (1-token prompts)")


def test_trl_orpo_nll_includes_the_prompt_and_ours_does_not():
    """Documented difference: TRL averages the NLL over prompt tokens 2.. and completion tokens of the chosen rows;
    ours (the ORPO paper's SFT term) over completion tokens only."""
    pairs = Pairs(seed=8, prompt_lengths=(3, 10, 1, 6, 2, 8))
    _, metrics = trl_full_loss(trl_pair_trainer(ORPOTrainer, beta=0.1), pairs)
    prompt_nll = sum(-pairs.tok_p[i, 1 : int(pairs.np[i])].sum() for i in range(len(pairs.np)))
    n_prompt = int((pairs.np - 1).sum())
    with_prompt = (-pairs.lw.sum() + prompt_nll) / (pairs.nw.sum() + n_prompt)
    close(metrics["nll_loss"], with_prompt.detach(), "TRL's ORPO NLL")
    ours = pairs.ours("orpo", reference=False, orpo_lambda=0.0).losses.mean()  # lambda = 0: the NLL alone
    close(ours, -pairs.lw.sum() / pairs.nw.sum(), "our ORPO NLL (completion tokens)")
    assert abs(ours.item() - metrics["nll_loss"]) > 1e-2


# ---- The official SimPO trainer (princeton-nlp/SimPO) ------------------------------------------------------------


def official_simpo_loss(pairs, beta, gamma_beta_ratio, sft_weight):
    """princeton-nlp/SimPO @ 1b3e8f3528a23bce3da514a2dce8ea7490d4bc75, scripts/simpo_trainer.py:
    L672-681 get_batch_logps(average_log_prob=True) -> mean completion log-prob per row;
    L576-584 simpo_loss: logits = (mean_w - mean_l) - gamma_beta_ratio, losses = -logsigmoid(beta * logits)
    (label_smoothing 0); L708-716: loss = losses.mean() + sft_weight * CrossEntropyLoss() over the chosen labels,
    i.e. the mean NLL over every unmasked chosen completion token of the micro-batch."""
    mean_w = (pairs.tok_w * pairs.mask_w).sum(1) / pairs.mask_w.sum(1)
    mean_l = (pairs.tok_l * pairs.mask_l).sum(1) / pairs.mask_l.sum(1)
    losses = -F.logsigmoid(beta * ((mean_w - mean_l) - gamma_beta_ratio))
    sft_loss = -(pairs.tok_w[pairs.mask_w]).mean()
    return losses.mean() + sft_weight * sft_loss


@pytest.mark.parametrize("sft_weight", [0.0, 0.7])
def test_simpo_equals_the_official_simpo_trainer(sft_weight):
    """gamma_beta_ratio converts as simpo_gamma = beta * gamma_beta_ratio (docs/losses.md)."""
    pairs, beta, ratio = Pairs(seed=9), 2.5, 0.55
    theirs = official_simpo_loss(pairs, beta, ratio, sft_weight)
    ours = pairs.ours("simpo", reference=False, beta=beta, simpo_gamma=beta * ratio, sft_weight=sft_weight)
    assert_same_loss_and_grads(pairs, ours.losses.mean(), theirs, f"simpo vs official SimPO (sft {sft_weight})")


# ---- The official alpha-DPO trainer (junkangwu/alpha-DPO) ----------------------------------------------------------


class OfficialAlphaDPO:
    """junkangwu/alpha-DPO @ fab32091cd1e36a275ad0b08adb09920c01cd65f, scripts/dpo_trainer.py (config ln: true, so
    L251-254 give per-token mean log-probs): L23-24 constant_1 = constant_2 = 0; L86-98 the loss:
        gap = (mean_w - mean_l) - (ref_mean_w - ref_mean_l); update, then
        normalized = (gap - constant_1) / constant_2,  logits = (mean_w - mean_l) - sg(alpha * normalized + ratio),
        losses = -logsigmoid(beta * logits);
    L140-148 the update: gathered gap, constant_1 <- 0.9 constant_1 + 0.1 mean, constant_2 <- 0.9 constant_2 + 0.1 std
    (torch.std, unbiased). `seed_from_first_batch` replaces the zero start by the first batch's statistics, which is
    our documented initialisation (docs/losses.md, alpha-DPO's margin normalizer); later steps are untouched."""

    def __init__(self, beta, gamma_beta_ratio, alpha, gather, seed_from_first_batch=False):
        self.beta, self.ratio, self.alpha, self.gather = beta, gamma_beta_ratio, alpha, gather
        self.constant_1 = self.constant_2 = torch.zeros((), dtype=torch.float64)
        self.seed = seed_from_first_batch
        self.steps = 0

    def loss(self, pairs, mean_w, mean_l):
        ref_mean_w, ref_mean_l = pairs.rw / pairs.nw, pairs.rl / pairs.nl
        gap = (mean_w - mean_l) - (ref_mean_w - ref_mean_l)
        with torch.no_grad():
            gathered = self.gather(gap.detach())
            if self.seed and self.steps == 0:
                self.constant_1, self.constant_2 = gathered.mean(), gathered.std()
            else:
                self.constant_1 = self.constant_1 * 0.9 + gathered.mean() * 0.1
                self.constant_2 = self.constant_2 * 0.9 + gathered.std() * 0.1
        self.steps += 1
        normalized = (gap - self.constant_1) / self.constant_2
        logits = (mean_w - mean_l) - (normalized * self.alpha + self.ratio).detach()
        return -F.logsigmoid(self.beta * logits)


def alpha_dpo_steps(steps=4):
    """(pairs, ours, official losses) over `steps` batches, with a second rank's margins in every gather."""
    beta, ratio, alpha = 2.5, 0.6, 0.2
    normalizer = AlphaMarginNormalizer(momentum=0.9)
    official = OfficialAlphaDPO(beta, ratio, alpha, gather=None, seed_from_first_batch=True)
    results = []
    for step in range(steps):
        pairs = Pairs(seed=20 + step)
        other_gap = torch.linspace(-1.0, 2.0, 5, dtype=torch.float64) * (step + 1)  # rank 1's unscaled margins
        official.gather = lambda g, o=other_gap: torch.cat([g, o])
        theirs = official.loss(pairs, pairs.lw / pairs.nw, pairs.ll / pairs.nl)
        ours = pairs.ours(
            "alpha_dpo",
            beta=beta,
            simpo_gamma=beta * ratio,  # docs/losses.md: simpo_gamma = beta * gamma_beta_ratio, alpha = beta * alpha
            alpha_dpo_alpha=beta * alpha,
            margin_normalizer=normalizer,
            margin_gather=lambda m, o=other_gap: torch.cat([m, beta * o]),  # ours gathers M = beta * gap
        )
        results.append((pairs, ours, theirs))
    return results, normalizer, official


def test_alpha_dpo_equals_the_official_trainer_from_the_first_batch_on():
    """Same loss and gradients at every step when the official state starts from the first batch, as ours does;
    steps 2+ therefore check the official EMA update (momentum 0.9, unbiased std of the gathered batch)."""
    results, normalizer, official = alpha_dpo_steps()
    for step, (pairs, ours, theirs) in enumerate(results):
        for i in range(len(pairs.nw)):
            assert_same_loss_and_grads(pairs, ours.losses[i], theirs[i], f"alpha-DPO step {step + 1} pair {i}")
    assert math.isclose(normalizer.mean, 2.5 * official.constant_1.item(), rel_tol=1e-12)
    assert math.isclose(normalizer.std, 2.5 * official.constant_2.item(), rel_tol=1e-12)


def test_alpha_dpo_first_step_differs_from_the_official_zero_start_as_documented():
    """The official zero start gives mu = 0.1 mean and sigma = 0.1 std after one batch, so its M* is
    (M - 0.1 mean) / (0.1 std): about 10x ours. After loading that state, our steps 2+ follow the official ones."""
    beta, ratio, alpha = 2.5, 0.6, 0.2
    pairs = Pairs(seed=20)
    other_gap = torch.linspace(-1.0, 2.0, 5, dtype=torch.float64)
    official = OfficialAlphaDPO(beta, ratio, alpha, lambda g: torch.cat([g, other_gap]))
    official.loss(pairs, pairs.lw / pairs.nw, pairs.ll / pairs.nl)
    gap = (pairs.lw - pairs.rw) / pairs.nw - (pairs.ll - pairs.rl) / pairs.nl
    everything = torch.cat([gap.detach(), other_gap])
    close(official.constant_1, 0.1 * everything.mean(), "official mu after one step")
    close(official.constant_2, 0.1 * everything.std(), "official sigma after one step")
    normalizer = AlphaMarginNormalizer(momentum=0.9)
    normalizer.load_state_dict(
        {"mean": beta * official.constant_1.item(), "std": beta * official.constant_2.item(), "num_updates": 1}
    )
    for step in range(1, 4):
        pairs = Pairs(seed=20 + step)
        theirs = official.loss(pairs, pairs.lw / pairs.nw, pairs.ll / pairs.nl)
        ours = pairs.ours(
            "alpha_dpo",
            beta=beta,
            simpo_gamma=beta * ratio,
            alpha_dpo_alpha=beta * alpha,
            margin_normalizer=normalizer,
            margin_gather=lambda m: torch.cat([m, beta * other_gap]),
        )
        assert_same_loss_and_grads(pairs, ours.losses.sum(), theirs.sum(), f"alpha-DPO step {step + 1}, zero start")


# ---- The MADPO author's loss class --------------------------------------------------------------------------------


def author_madpo_loss(lp1, lp2, ref1, ref2, reward1, reward2, choices, beta, c_max, c_min, lmbda, tau):
    """sirano1004/Margin-Apative-Direct-Preference-Optimization @ 306779b33acbe6fb2a3df6087673e5ec1ca699d9,
    utils/loss_functions.py L85-129 (MADPOLoss): h = reward1 - reward2, c = coef(|h|) (L94-100),
    w1 = sigma(c h)/sigma(h) if h > -tau else 1, w2 the same for -h (L116-117); loss = cross_entropy over the
    logits [beta(lp1 - ref1), beta(lp2 - ref2)] with target `choices`, weighted by the chosen side's w (L120-127)."""
    h = reward1 - reward2
    c = c_min + (c_max - c_min) / (1 + (c_max - 1) / (1 - c_min) * torch.exp(lmbda * (h.abs() - tau)))
    w1 = torch.where(h > -tau, torch.sigmoid(c * h) / torch.sigmoid(h), torch.ones_like(h))
    w2 = torch.where(-h > -tau, torch.sigmoid(-c * h) / torch.sigmoid(-h), torch.ones_like(h))
    weights = torch.stack([w1, w2], dim=1)[torch.arange(len(choices)), choices]
    logits = torch.stack([beta * (lp1 - ref1), beta * (lp2 - ref2)], dim=1)
    return F.cross_entropy(logits, choices, reduction="none") * weights


def test_madpo_defaults_are_the_authors_experiment_settings():
    """The author's MADPO.ipynb hyper-parameter cell (same commit): beta 0.1, c_max 2, c_min 1/c_max, lmbda 1,
    tau = log(0.999/0.001). (The class's own default tau = 2, L86, is overridden there.)"""
    assert LOSS_HPARAM_DEFAULTS["madpo_c_max"] == 2.0 and LOSS_HPARAM_DEFAULTS["madpo_c_min"] == 1 / 2.0
    assert LOSS_HPARAM_DEFAULTS["madpo_lambda"] == 1.0
    assert LOSS_HPARAM_DEFAULTS["madpo_tau"] == pytest.approx(math.log(0.999 / 0.001), abs=1e-15)


@pytest.mark.parametrize("hparams", [{}, {"madpo_c_max": 4.0, "madpo_c_min": 0.25, "madpo_tau": 2.0}])
def test_madpo_equals_the_authors_loss_class_in_both_orders(hparams):
    """The author's class takes (y1, y2, choices); our chosen is y1 (choices 0) or y2 (choices 1) pair by pair."""
    pairs, beta = Pairs(seed=10), 0.1
    settings = {k: hparams.get(f"madpo_{k}", LOSS_HPARAM_DEFAULTS[f"madpo_{k}"]) for k in ("c_max", "c_min", "tau")}
    margins = torch.tensor([-8.0, -1.5, 0.3, 2.0, 5.0, 9.0], dtype=torch.float64)
    out = pairs.ours("madpo", reward_margins=margins, beta=beta, **hparams)
    score_w = torch.rand(6, dtype=torch.float64)
    score_l = score_w - margins
    choices = torch.tensor([0, 1, 0, 1, 1, 0])
    first = choices == 0  # y1 is the chosen answer
    swap = lambda a, b: (torch.where(first, a, b), torch.where(first, b, a))  # noqa: E731
    lp1, lp2 = swap(pairs.lw, pairs.ll)
    ref1, ref2 = swap(pairs.rw, pairs.rl)
    reward1, reward2 = swap(score_w, score_l)
    theirs = author_madpo_loss(lp1, lp2, ref1, ref2, reward1, reward2, choices, beta, lmbda=1.0, **settings)
    for i in range(len(margins)):
        assert_same_loss_and_grads(pairs, out.losses[i], theirs[i], f"madpo pair {i} vs the author's MADPOLoss")


# ---- The Ada- losses against docs/losses.md -------------------------------------------------------------------------


def docs_ada_loss(name, pairs, beta, clip, alpha=0.05, gamma=0.5, lam=0.5):
    """The docs/losses.md table, Stable column: beta_w / beta_l = min(s_l/s_w * exp(q_w/|yw| - q_l/|yl|), C), with
    q = l - r (ratio balance, the default) for the DPO family and q = l for the reference-free bases."""
    lw, ll, rw, rl, nw, nl = pairs.lw, pairs.ll, pairs.rw, pairs.rl, pairs.nw.double(), pairs.nl.double()
    xw, xl = lw - rw, ll - rl
    pw, pl = torch.exp(lw / nw), torch.exp(ll / nl)
    with torch.no_grad():
        per_token_ratio = torch.exp(xw / nw - xl / nl)
        per_token_policy = torch.exp(lw / nw - ll / nl)
        factor = {
            "ada_rdpo": per_token_ratio,
            "ada_ipo": nw / nl * per_token_ratio,
            "ada_cpo": per_token_policy,
            "ada_simpo": nw / nl * per_token_policy,
            "ada_orpo": nw * pw * (1 - pw) / (nl * pl * (1 - pl)),
        }[name]
        ratio = torch.clamp(factor, max=clip)
    nll = -lw / nw.mean()
    if name == "ada_rdpo":
        return -F.logsigmoid(beta * ratio * xw - beta * xl + alpha * (nw - nl))
    if name == "ada_ipo":
        return (ratio * xw / nw - xl / nl - 1 / (2 * beta)) ** 2
    if name == "ada_cpo":
        return -F.logsigmoid(beta * ratio * lw - beta * ll) + lam * nll
    if name == "ada_simpo":
        return -F.logsigmoid(beta * ratio * lw / nw - beta * ll / nl - gamma) + lam * nll
    odds_w, odds_l = torch.log(pw / (1 - pw)), torch.log(pl / (1 - pl))
    return nll + lam * -F.logsigmoid(beta * ratio * odds_w - beta * odds_l)


@pytest.mark.parametrize("name", ["ada_rdpo", "ada_ipo", "ada_cpo", "ada_simpo", "ada_orpo"])
def test_ada_losses_equal_the_formulas_of_docs_losses_md(name):
    pairs, beta, clip = Pairs(seed=11), 0.6, 1.3
    hparams = {"ada_rdpo": {"rdpo_alpha": 0.05}, "ada_cpo": {"cpo_alpha": 0.5}, "ada_orpo": {"orpo_lambda": 0.5}}
    hparams["ada_simpo"] = {"simpo_gamma": 0.5, "sft_weight": 0.5}
    out = pairs.ours(
        name, reference=name in ("ada_rdpo", "ada_ipo"), beta=beta, adadpo_clip=clip, **hparams.get(name, {})
    )
    assert out.metrics["clipped"].any() and not out.metrics["clipped"].all(), "exercise both sides of the clip"
    theirs = docs_ada_loss(name, pairs, beta, clip)
    assert_same_loss_and_grads(pairs, out.losses.sum(), theirs.sum(), f"{name} vs docs/losses.md")


def test_every_loss_is_checked_against_an_outside_implementation_here():
    """A new loss must come with its cross-check in this file, in test_losses_trl_types.py (TRL's loss types and
    their Ada- versions), or, for adadpo, Listing 1 in test_losses_adadpo."""
    from tests.losses.test_losses_trl_types import CHECKED_AGAINST_TRL

    checked = {"dpo", "ipo", "rdpo", "cpo", "simpo", "orpo", "alpha_dpo", "madpo", "adadpo"}
    checked |= {"ada_rdpo", "ada_ipo", "ada_cpo", "ada_simpo", "ada_orpo"}
    assert set(LOSSES) == checked | CHECKED_AGAINST_TRL
