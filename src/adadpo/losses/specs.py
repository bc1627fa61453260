"""The table of registered losses: each loss's function, one-line formula, paper, and the facts other packages ask
of it (reference or not, its base loss, its step-0 value). A loss's hyperparameters are its function's keyword
arguments (`LossSpec.hparams`), each declared once in `adadpo.losses.hparams`."""

from __future__ import annotations

from adadpo.losses import adaptive, dpo_family, simpo_family, trl_family
from adadpo.losses.types import LossSpec


_ADA_PAPER = "AdaDPO: Self-Adaptive Direct Preference Optimization with Balanced Gradient Updates (arXiv 2605.28440)"
_SLIC = "Calibrating Sequence Likelihood Improves Conditional Language Generation (SLiC, arXiv 2210.00045)"
_EXO = "Towards Efficient Exact Optimization of Language Model Alignment (arXiv 2402.00856)"
_ROBUST = "Provably Robust DPO: Aligning Language Models with Noisy Feedback (arXiv 2403.00409)"
_DISCOPOP = "Discovering Preference Optimization Algorithms with and for Large Language Models (arXiv 2406.08414)"
_LN_DPO = "Length-normalized DPO, the SimPO paper's LN-DPO baseline (arXiv 2405.14734)"
_AOT = "Distributional Preference Alignment of LLMs via Optimal Transport (arXiv 2406.05882)"
_APO = "Anchored Preference Optimization and Contrastive Revisions (arXiv 2408.06266)"


def _exo_needs_smoothing(hparams: dict) -> str | None:
    if hparams["label_smoothing"] <= 0:
        return "`exo_pair` needs `label_smoothing` > 0 (its target distribution is [1 - e, e]; the paper uses 1e-3)"
    return None


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
    # ---- TRL 1.16's loss types (adadpo.losses.trl_family), by TRL's names; `sigmoid` is `dpo` (LOSS_ALIASES) ----
    LossSpec(
        "hinge",
        trl_family.hinge_loss,
        needs_reference=True,
        formula="max(0, 1 - β[(lw-rw) - (ll-rl)])",
        paper=_SLIC,
        identity_loss=trl_family.hinge_identity_loss,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "exo_pair",
        trl_family.exo_pair_loss,
        needs_reference=True,
        formula="σ(z)(log σ(z) - log(1-ε)) + σ(-z)(log σ(-z) - log ε), z = β[(lw-rw) - (ll-rl)]",
        paper=_EXO,
        log_ratio_rewards=True,
        check=_exo_needs_smoothing,
    ),
    LossSpec(
        "nca_pair",
        trl_family.nca_pair_loss,
        needs_reference=True,
        formula="-log σ(β(lw-rw)) - ½ log σ(-β(lw-rw)) - ½ log σ(-β(ll-rl))",
        paper="Noise Contrastive Alignment of Language Models with Explicit Rewards (arXiv 2402.05369)",
        log_ratio_rewards=True,
    ),
    LossSpec(
        "robust",
        trl_family.robust_loss,
        needs_reference=True,
        formula="(-(1-ε) log σ(z) + ε log σ(-z)) / (1 - 2ε), z = β[(lw-rw) - (ll-rl)]",
        paper=_ROBUST,
        identity_loss=dpo_family.dpo_identity_loss,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "bco_pair",
        trl_family.bco_pair_loss,
        needs_reference=True,
        formula="-log σ(β(lw-rw)) - log σ(-β(ll-rl))",
        paper="Binary Classifier Optimization for Large Language Model Alignment (arXiv 2404.04656)",
        log_ratio_rewards=True,
    ),
    LossSpec(
        "sppo_hard",
        trl_family.sppo_hard_loss,
        needs_reference=True,
        formula="((lw-rw) - 1/(2β))² + ((ll-rl) + 1/(2β))²",
        paper="Self-Play Preference Optimization for Language Model Alignment (arXiv 2405.00675)",
        log_ratio_rewards=True,
    ),
    LossSpec(
        "aot",
        trl_family.aot_loss,
        needs_reference=True,
        formula="-(1-ε) log σ(βd) - ε log σ(-βd), d = sort_batch(lw - ll) - sort_batch(rw - rl)",
        paper=_AOT,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "aot_unpaired",
        trl_family.aot_unpaired_loss,
        needs_reference=True,
        formula="-(1-ε) log σ(βd) - ε log σ(-βd), d = sort_batch(lw - rw) - sort_batch(ll - rl)",
        paper=_AOT,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "apo_zero",
        trl_family.apo_zero_loss,
        needs_reference=True,
        formula="1 - σ(β(lw-rw)) + σ(β(ll-rl))",
        paper=_APO,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "apo_down",
        trl_family.apo_down_loss,
        needs_reference=True,
        formula="σ(β(lw-rw)) + 1 - σ(β[(lw-rw) - (ll-rl)])",
        paper=_APO,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "discopop",
        trl_family.discopop_loss,
        needs_reference=True,
        formula="-log σ(z)(1 - σ(z/τ)) + exp(-z) σ(z/τ), z = β[(lw-rw) - (ll-rl)]",
        paper=_DISCOPOP,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "sft",
        trl_family.sft_loss,
        needs_reference=False,
        formula="-Σ_batch lw / Σ_batch |yw| (the chosen responses' token-mean NLL)",
        paper="The SFT term of Mixed Preference Optimization (MPO, arXiv 2411.10442)",
    ),
    LossSpec(
        "sigmoid_norm",
        trl_family.sigmoid_norm_loss,
        needs_reference=True,
        formula="-log σ(β[(lw-rw)/|yw| - (ll-rl)/|yl|])",
        paper=_LN_DPO,
        identity_loss=dpo_family.dpo_identity_loss,
        log_ratio_rewards=True,
    ),
    # ---- their Ada- versions (adadpo.losses.adaptive): DPO-form heads, where the balance applies ----
    LossSpec(
        "ada_hinge",
        adaptive.ada_hinge_loss,
        needs_reference=True,
        base="hinge",
        formula="max(0, 1 - (β_w(lw-rw) - β(ll-rl))), β_w as in adadpo",
        paper=_ADA_PAPER,
        identity_loss=trl_family.hinge_identity_loss,
        identity_beta_w=adaptive.exp_ratio_identity_beta_w,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "ada_exo_pair",
        adaptive.ada_exo_pair_loss,
        needs_reference=True,
        base="exo_pair",
        formula="exo_pair's head at z = β_w(lw-rw) - β(ll-rl), β_w as in adadpo",
        paper=_ADA_PAPER,
        identity_beta_w=adaptive.exp_ratio_identity_beta_w,
        log_ratio_rewards=True,
        check=_exo_needs_smoothing,
    ),
    LossSpec(
        "ada_robust",
        adaptive.ada_robust_loss,
        needs_reference=True,
        base="robust",
        formula="robust's head at z = β_w(lw-rw) - β(ll-rl), β_w as in adadpo",
        paper=_ADA_PAPER,
        identity_loss=dpo_family.dpo_identity_loss,
        identity_beta_w=adaptive.exp_ratio_identity_beta_w,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "ada_discopop",
        adaptive.ada_discopop_loss,
        needs_reference=True,
        base="discopop",
        formula="discopop's head at z = β_w(lw-rw) - β(ll-rl), β_w as in adadpo",
        paper=_ADA_PAPER,
        identity_beta_w=adaptive.exp_ratio_identity_beta_w,
        log_ratio_rewards=True,
    ),
    LossSpec(
        "ada_sigmoid_norm",
        adaptive.ada_sigmoid_norm_loss,
        needs_reference=True,
        base="sigmoid_norm",
        formula="-log σ(β_w(lw-rw)/|yw| - β(ll-rl)/|yl|), β_w = β·min(k·sg(|yw|R_w/(|yl|R_l)), C)",
        paper=_ADA_PAPER,
        identity_loss=dpo_family.dpo_identity_loss,
        log_ratio_rewards=True,
    ),
]
