"""The table of registered losses: function, requirements, hyperparameters, one-line formula and paper."""

from __future__ import annotations

from adadpo.losses import adaptive, dpo_family, simpo_family
from adadpo.losses.types import LossSpec


_ADA = ("adadpo_clip", "adadpo_length_normalize", "adadpo_scale")
_ADA_PAPER = "AdaDPO: Self-Adaptive Direct Preference Optimization with Balanced Gradient Updates (arXiv 2605.28440)"

ALL_SPECS = [
    LossSpec(
        "dpo",
        dpo_family.dpo_loss,
        True,
        ("beta",),
        formula="-log σ(β[(lw-rw) - (ll-rl)])",
        paper="Direct Preference Optimization: Your Language Model is Secretly a Reward Model (arXiv 2305.18290)",
    ),
    LossSpec(
        "ipo",
        dpo_family.ipo_loss,
        True,
        ("beta",),
        formula="((lw-rw)/|yw| - (ll-rl)/|yl| - 1/(2β))²",
        paper="A General Theoretical Paradigm to Understand Learning from Human Preferences (arXiv 2310.12036)",
    ),
    LossSpec(
        "rdpo",
        dpo_family.rdpo_loss,
        True,
        ("beta", "rdpo_alpha"),
        formula="-log σ(β[(lw-rw) - (ll-rl)] + α(|yw| - |yl|))",
        paper="Disentangling Length from Quality in Direct Preference Optimization (arXiv 2403.19159)",
    ),
    LossSpec(
        "madpo",
        dpo_family.madpo_loss,
        True,
        ("beta", "madpo_c_max", "madpo_c_min", "madpo_lambda", "madpo_tau"),
        needs_reward_margin=True,
        formula="-w(h_rm)·log σ(β[(lw-rw) - (ll-rl)]), w(h) = σ(c(|h|)h)/σ(h) for h > -τ else 1",
        paper="Margin Adaptive DPO: Leveraging Reward Model for Granular Control in Preference Optimization "
        "(arXiv 2510.05342)",
    ),
    LossSpec(
        "cpo",
        simpo_family.cpo_loss,
        False,
        ("beta", "cpo_alpha", "nll_average"),
        formula="-log σ(β(lw - ll)) + λ·(-lw/mean_batch(|yw|))",
        paper="Contrastive Preference Optimization: Pushing the Boundaries of LLM Performance in Machine "
        "Translation (arXiv 2401.08417)",
    ),
    LossSpec(
        "orpo",
        simpo_family.orpo_loss,
        False,
        ("beta", "orpo_lambda", "nll_average"),
        formula="-lw/mean_batch(|yw|) + λ·(-log σ(β(logodds_w - logodds_l))), logodds = log p - log(1-p), "
        "p = exp(l/|y|)",
        paper="ORPO: Monolithic Preference Optimization without Reference Model (arXiv 2403.07691)",
    ),
    LossSpec(
        "simpo",
        simpo_family.simpo_loss,
        False,
        ("beta", "simpo_gamma", "sft_weight", "nll_average"),
        formula="-log σ(β·lw/|yw| - β·ll/|yl| - γ) + sft_weight·(-lw/mean_batch(|yw|))",
        paper="SimPO: Simple Preference Optimization with a Reference-Free Reward (arXiv 2405.14734)",
    ),
    LossSpec(
        "alpha_dpo",
        simpo_family.alpha_dpo_loss,
        True,
        ("beta", "simpo_gamma", "alpha_dpo_alpha", "alpha_dpo_momentum"),
        needs_margin_normalizer=True,
        formula="-log σ(β·lw/|yw| - β·ll/|yl| - sg(γ + α·M*)), M* = (M - μ)/σ, M = β[(lw-rw)/|yw| - (ll-rl)/|yl|]",
        paper="α-DPO: Adaptive Reward Margin is What Direct Preference Optimization Needs (arXiv 2410.10148)",
    ),
    LossSpec(
        "adadpo",
        adaptive.adadpo_loss,
        True,
        ("beta", *_ADA, "adadpo_balance"),
        formula="-log σ(β_w(lw-rw) - β(ll-rl)), β_w = β·min(k·sg(exp((lw-rw)/|yw| - (ll-rl)/|yl|)), C)",
        paper=_ADA_PAPER,
    ),
    LossSpec(
        "ada_ipo",
        adaptive.ada_ipo_loss,
        True,
        ("beta", *_ADA, "adadpo_balance"),
        formula="(β_w(lw-rw)/|yw| - (ll-rl)/|yl| - 1/(2β))², β_w = min(k·sg(|yw|R_w/(|yl|R_l)), C)",
        paper=_ADA_PAPER,
    ),
    LossSpec(
        "ada_rdpo",
        adaptive.ada_rdpo_loss,
        True,
        ("beta", "rdpo_alpha", *_ADA, "adadpo_balance"),
        formula="-log σ(β_w(lw-rw) - β(ll-rl) + α(|yw| - |yl|)), β_w as in adadpo",
        paper=_ADA_PAPER,
    ),
    LossSpec(
        "ada_cpo",
        adaptive.ada_cpo_loss,
        False,
        ("beta", "cpo_alpha", "nll_average", *_ADA),
        formula="-log σ(β_w·lw - β·ll) + λ·(-lw/mean_batch(|yw|)), β_w = β·min(k·sg(P_w/P_l), C)",
        paper=_ADA_PAPER,
    ),
    LossSpec(
        "ada_orpo",
        adaptive.ada_orpo_loss,
        False,
        ("beta", "orpo_lambda", "nll_average", *_ADA),
        formula="-lw/mean_batch(|yw|) + λ·(-log σ(β_w·logodds_w - β·logodds_l)), "
        "β_w = β·min(k·sg(|yw|(1-p_w)P_w/(|yl|(1-p_l)P_l)), C)",
        paper=_ADA_PAPER,
    ),
    LossSpec(
        "ada_simpo",
        adaptive.ada_simpo_loss,
        False,
        ("beta", "simpo_gamma", "sft_weight", "nll_average", *_ADA),
        formula="-log σ(β_w·lw/|yw| - β·ll/|yl| - γ) + sft_weight·(-lw/mean_batch(|yw|)), "
        "β_w = β·min(k·sg(|yw|P_w/(|yl|P_l)), C)",
        paper=_ADA_PAPER,
    ),
]
