"""The table of registered losses: each loss's function, one-line formula, paper, and the facts other packages ask
of it (reference or not, its base loss, its step-0 value). A loss's hyperparameters are its function's keyword
arguments (`LossSpec.hparams`), each declared once in `adadpo.losses.hparams`."""

from __future__ import annotations

from adadpo.losses import adaptive, dpo_family, simpo_family
from adadpo.losses.types import LossSpec


_ADA_PAPER = "AdaDPO: Self-Adaptive Direct Preference Optimization with Balanced Gradient Updates (arXiv 2605.28440)"

ALL_SPECS = [
    LossSpec(
        "dpo",
        dpo_family.dpo_loss,
        needs_reference=True,
        formula="-log σ(β[(lw-rw) - (ll-rl)])",
        paper="Direct Preference Optimization: Your Language Model is Secretly a Reward Model (arXiv 2305.18290)",
        identity_loss=dpo_family.dpo_identity_loss,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "ipo",
        dpo_family.ipo_loss,
        needs_reference=True,
        formula="((lw-rw)/|yw| - (ll-rl)/|yl| - 1/(2β))²",
        paper="A General Theoretical Paradigm to Understand Learning from Human Preferences (arXiv 2310.12036)",
        identity_loss=dpo_family.ipo_identity_loss,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "rdpo",
        dpo_family.rdpo_loss,
        needs_reference=True,
        formula="-log σ(β[(lw-rw) - (ll-rl)] + α(|yw| - |yl|))",
        paper="Disentangling Length from Quality in Direct Preference Optimization (arXiv 2403.19159)",
        identity_loss=dpo_family.rdpo_identity_loss,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "madpo",
        dpo_family.madpo_loss,
        needs_reference=True,
        needs_reward_margin=True,
        formula="-w(h_rm)·log σ(β[(lw-rw) - (ll-rl)]), w(h) = σ(c(|h|)h)/σ(h) for h > -τ else 1",
        paper="Margin Adaptive DPO: Leveraging Reward Model for Granular Control in Preference Optimization "
        "(arXiv 2510.05342)",
        log_ratio_rewards=True,
    ),
    LossSpec(
        "cpo",
        simpo_family.cpo_loss,
        needs_reference=False,
        formula="-log σ(β(lw - ll)) + λ·(-lw/mean_batch(|yw|))",
        paper="Contrastive Preference Optimization: Pushing the Boundaries of LLM Performance in Machine "
        "Translation (arXiv 2401.08417)",
    ),
    LossSpec(
        "orpo",
        simpo_family.orpo_loss,
        needs_reference=False,
        formula="-lw/mean_batch(|yw|) + λ·(-log σ(β(logodds_w - logodds_l))), logodds = log p - log(1-p), "
        "p = exp(l/|y|)",
        paper="ORPO: Monolithic Preference Optimization without Reference Model (arXiv 2403.07691)",
    ),
    LossSpec(
        "simpo",
        simpo_family.simpo_loss,
        needs_reference=False,
        formula="-log σ(β·lw/|yw| - β·ll/|yl| - γ) + sft_weight·(-lw/mean_batch(|yw|))",
        paper="SimPO: Simple Preference Optimization with a Reference-Free Reward (arXiv 2405.14734)",
    ),
    LossSpec(
        "alpha_dpo",
        simpo_family.alpha_dpo_loss,
        needs_reference=True,
        needs_margin_normalizer=True,
        state_hparams=("alpha_dpo_momentum",),
        formula="-log σ(β·lw/|yw| - β·ll/|yl| - sg(γ + α·M*)), M* = (M - μ)/σ, M = β[(lw-rw)/|yw| - (ll-rl)/|yl|]",
        paper="α-DPO: Adaptive Reward Margin is What Direct Preference Optimization Needs (arXiv 2410.10148)",
    ),
    LossSpec(
        "adadpo",
        adaptive.adadpo_loss,
        needs_reference=True,
        base="dpo",
        formula="-log σ(β_w(lw-rw) - β(ll-rl)), β_w = β·min(k·sg(exp((lw-rw)/|yw| - (ll-rl)/|yl|)), C)",
        paper=_ADA_PAPER,
        identity_loss=dpo_family.dpo_identity_loss,
        identity_beta_w=adaptive.exp_ratio_identity_beta_w,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "ada_ipo",
        adaptive.ada_ipo_loss,
        needs_reference=True,
        base="ipo",
        formula="(β_w(lw-rw)/|yw| - (ll-rl)/|yl| - 1/(2β))², β_w = min(k·sg(|yw|R_w/(|yl|R_l)), C)",
        paper=_ADA_PAPER,
        identity_loss=dpo_family.ipo_identity_loss,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "ada_rdpo",
        adaptive.ada_rdpo_loss,
        needs_reference=True,
        base="rdpo",
        formula="-log σ(β_w(lw-rw) - β(ll-rl) + α(|yw| - |yl|)), β_w as in adadpo",
        paper=_ADA_PAPER,
        identity_loss=dpo_family.rdpo_identity_loss,
        identity_beta_w=adaptive.exp_ratio_identity_beta_w,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "ada_cpo",
        adaptive.ada_cpo_loss,
        needs_reference=False,
        base="cpo",
        formula="-log σ(β_w·lw - β·ll) + λ·(-lw/mean_batch(|yw|)), β_w = β·min(k·sg(P_w/P_l), C)",
        paper=_ADA_PAPER,
    ),
    LossSpec(
        "ada_orpo",
        adaptive.ada_orpo_loss,
        needs_reference=False,
        base="orpo",
        formula="-lw/mean_batch(|yw|) + λ·(-log σ(β_w·logodds_w - β·logodds_l)), "
        "β_w = β·min(k·sg(|yw|(1-p_w)P_w/(|yl|(1-p_l)P_l)), C)",
        paper=_ADA_PAPER,
    ),
    LossSpec(
        "ada_simpo",
        adaptive.ada_simpo_loss,
        needs_reference=False,
        base="simpo",
        formula="-log σ(β_w·lw/|yw| - β·ll/|yl| - γ) + sft_weight·(-lw/mean_batch(|yw|)), "
        "β_w = β·min(k·sg(|yw|P_w/(|yl|P_l)), C)",
        paper=_ADA_PAPER,
    ),
]
