"""Check 2, step-0 identity: before the first update the policy is the reference, so every reference-based loss
takes the value its spec states (`LossSpec.identity_loss`: DPO-style ln 2 per pair, IPO 1/(4 beta^2), R-DPO its length
term alone), reward margins are zero (`log_ratio_rewards`) and an Ada- loss's beta_w is what the hyperparameters make
it (`identity_beta_w`: beta min(k, C) for the ratio balance). A packing leak, a wrong reference (another model, a
stale cache) or a template that shifts tokens between the two forwards all show up here as a different first loss."""

import torch

from adadpo.losses import preference_loss
from adadpo.preflight.batches import collate, model_dtype, pairs, policy_logps
from adadpo.preflight.report import FAIL, PASS, Report, fmt


GROUP = "2 step-0 identity"
# Per-pair loss (absolute) and log-prob (relative to |logp|, plus 1e-3) tolerances by the model's dtype: fp32 forwards
# of the same weights agree to round-off; bf16 / fp16 sums of ~1e3 token log-probs to about 1e-2 relative.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 1e-2}


def _policy_tensors(trainer, batch: dict) -> dict:
    policy = policy_logps(trainer, batch, ld_alpha=trainer.args.ld_alpha)
    chosen, rejected = (x.float() for x in policy.logps.chunk(2))
    chosen_lengths, rejected_lengths = policy.lengths.chunk(2)
    return {
        "policy_chosen_logps": chosen,
        "policy_rejected_logps": rejected,
        "chosen_lengths": chosen_lengths,
        "rejected_lengths": rejected_lengths,
        "reward_margins": pairs(batch).get("reward_margin"),
    }


def _expected_losses(loss_fn, tensors: dict, reference: bool):
    """The per-pair loss the spec states at step 0; without a closed form, the same loss with the reference set
    exactly to the policy (reference-based) or recomputed through the functional form (reference-free)."""
    closed_form = loss_fn.identity_losses(tensors["chosen_lengths"], tensors["rejected_lengths"])
    if reference and closed_form is not None:
        return closed_form
    if reference:
        own = {
            "ref_chosen_logps": tensors["policy_chosen_logps"],
            "ref_rejected_logps": tensors["policy_rejected_logps"],
        }
        return loss_fn(training=False, **own, **tensors).losses
    hparams = {k: v for hp in loss_fn.component_hparams for k, v in hp.items()}
    functional = preference_loss(
        [spec.name for spec in loss_fn.specs],
        weights=loss_fn.weights,
        **hparams,
        margin_normalizer=loss_fn.normalizer,
        update_margin_stats=False,
        **tensors,
    )
    return functional.losses


def check_identity(report: Report, trainer, batches: list[list[dict]], reference, fix_reference: str) -> dict:
    """The step-0 rows of the table; returns the mean step-0 loss and the per-pair losses (for the distributed
    check). No batch to check (an empty train split) is itself a FAIL, not a crash."""
    loss_fn, spec = trainer.loss_fn, trainer.loss_fn.spec
    if not batches:
        report.add(
            GROUP,
            f"{loss_fn.name} loss at step 0",
            FAIL,
            "no micro-batch to check",
            "the train split is empty: check `dataset_name` / `dataset_mixture` and the data checks' drop counts",
        )
        return {"step0_loss": None, "losses": torch.zeros(0)}  # None, not NaN: the --report file stays JSON
    tol = TOLERANCE.get(model_dtype(trainer), 2e-2)
    identity_beta_w = loss_fn.identity_beta_w()
    uses_reference = reference.mode != "reference-free"
    worst = {"logp": 0.0, "ratio": 0.0, "loss": 0.0, "margin": 0.0, "beta_w": 0.0}
    losses = []
    for rows in batches:
        batch = collate(trainer, rows)
        with torch.no_grad():
            tensors = _policy_tensors(trainer, batch)
            chosen, rejected = tensors["policy_chosen_logps"], tensors["policy_rejected_logps"]
            refs = {}
            if uses_reference:
                ref_chosen, ref_rejected = (x.float().to(chosen.device) for x in reference.logps(batch))
                refs = {"ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
                delta = torch.cat([chosen - ref_chosen, rejected - ref_rejected]).abs()
                scale = torch.cat([chosen, rejected]).abs() * tol + 1e-3
                worst["logp"] = max(worst["logp"], float(delta.max()))
                worst["ratio"] = max(worst["ratio"], float((delta / scale).max()))  # <= 1 passes
            measured = loss_fn(training=False, **refs, **tensors)
            expected = _expected_losses(loss_fn, tensors, uses_reference).to(chosen.device)
        worst["loss"] = max(worst["loss"], float((measured.losses.float() - expected).abs().max()))
        losses.append(measured.losses.float().cpu())
        if uses_reference and spec.log_ratio_rewards:
            margin = (measured.chosen_rewards - measured.rejected_rewards).abs().max()
            worst["margin"] = max(worst["margin"], float(margin))
        if uses_reference and identity_beta_w is not None:
            worst["beta_w"] = max(worst["beta_w"], float((measured.metrics["beta_w"] - identity_beta_w).abs().max()))
    losses = torch.cat(losses)
    mean_loss, pairs = float(losses.mean()), len(losses)
    if uses_reference:
        report.add(
            GROUP,
            "reference log-probs == policy",
            PASS if worst["ratio"] <= 1 else FAIL,
            f"max |d logp| {fmt(worst['logp'])} (tol {tol} |logp| + 1e-3, {2 * pairs} sequences)",
            fix_reference,
        )
    label = "closed form" if uses_reference else "formula at the measured log-probs"
    fix = fix_reference if uses_reference else f"the trainer's loss differs from adadpo.losses.{loss_fn.name}: a bug"
    report.add(
        GROUP,
        f"{loss_fn.name} loss == {label}",
        PASS if worst["loss"] <= tol else FAIL,
        f"mean {fmt(mean_loss)} over {pairs} pairs, max |diff| {fmt(worst['loss'])} (tol {tol})",
        fix,
    )
    if uses_reference and spec.log_ratio_rewards:
        report.add(
            GROUP,
            "reward margins == 0",
            PASS if worst["margin"] <= tol else FAIL,
            f"max |margin| {fmt(worst['margin'])}",
            fix_reference,
        )
    if uses_reference and identity_beta_w is not None:
        report.add(
            GROUP,
            "beta_w == beta min(k, C)",
            PASS if worst["beta_w"] <= tol else FAIL,
            f"max |beta_w - {fmt(identity_beta_w)}| {fmt(worst['beta_w'])}",
            fix_reference,
        )
    return {"step0_loss": mean_loss, "losses": losses}
