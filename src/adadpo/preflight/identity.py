"""Check 2, step-0 identity: before the first update the policy is the reference, so every reference-based loss
takes a closed-form value (DPO-style: ln 2 per pair; IPO: 1/(4 beta^2); R-DPO: its length term alone), reward
margins are zero and AdaDPO's beta_w is beta. A packing leak, a wrong reference (another model, a stale cache) or a
template that shifts tokens between the two forwards all show up here as a different first loss."""

import math

import torch
import torch.nn.functional as F

from adadpo.losses import preference_loss
from adadpo.preflight.batches import collate, model_dtype
from adadpo.preflight.report import FAIL, PASS, Report, fmt
from adadpo.training.logps import sequence_logps


GROUP = "2 step-0 identity"
# Per-pair loss (absolute) and log-prob (relative to |logp|, plus 1e-3) tolerances by the model's dtype: fp32 forwards
# of the same weights agree to round-off; bf16 / fp16 sums of ~1e3 token log-probs to about 1e-2 relative.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 1e-2}
LOG_RATIO_LOSSES = ("dpo", "ipo", "rdpo", "madpo", "adadpo", "ada_ipo", "ada_rdpo")  # rewards are beta x log-ratios
ADAPTIVE_EXP_LOSSES = ("adadpo", "ada_rdpo")  # beta_w = beta * min(k * exp(0), C) at identity


def closed_form(name: str, hparams: dict, chosen_lengths, rejected_lengths):
    """The per-pair loss with policy == reference, where it has a closed form; None otherwise."""
    ones = torch.ones_like(chosen_lengths, dtype=torch.float32)
    if name in ("dpo", "adadpo"):
        return ones * math.log(2)
    if name in ("ipo", "ada_ipo"):
        return ones / (4 * hparams["beta"] ** 2)
    if name in ("rdpo", "ada_rdpo"):
        return -F.logsigmoid(hparams["rdpo_alpha"] * (chosen_lengths - rejected_lengths).float())
    return None


def check_identity(report: Report, trainer, batches: list[list[dict]], reference, fix_reference: str) -> dict:
    loss_fn = trainer.loss_fn
    tol = TOLERANCE.get(model_dtype(trainer), 2e-2)
    worst = {"logp": 0.0, "ratio": 0.0, "loss": 0.0, "margin": 0.0, "beta_w": 0.0}
    losses = []
    for rows in batches:
        batch = collate(trainer, rows)
        with torch.no_grad():
            policy = sequence_logps(trainer.model_wrapped, batch)
            chosen, rejected = (x.float() for x in policy.logps.chunk(2))
            chosen_len, rejected_len = policy.lengths.chunk(2)
            tensors = {
                "policy_chosen_logps": chosen,
                "policy_rejected_logps": rejected,
                "chosen_lengths": chosen_len,
                "rejected_lengths": rejected_len,
                "reward_margins": batch.get("reward_margin"),
            }
            ref = reference.logps(batch)
            if ref is not None:
                ref_chosen, ref_rejected = (x.float().to(chosen.device) for x in ref)
                delta = torch.cat([chosen - ref_chosen, rejected - ref_rejected]).abs()
                scale = torch.cat([chosen, rejected]).abs() * tol + 1e-3
                worst["logp"] = max(worst["logp"], float(delta.max()))
                worst["ratio"] = max(worst["ratio"], float((delta / scale).max()))  # <= 1 passes
                measured = loss_fn(ref_chosen_logps=ref_chosen, ref_rejected_logps=ref_rejected, training=False,
                                   **tensors)  # fmt: skip
                expected = closed_form(loss_fn.name, loss_fn.hparams, chosen_len, rejected_len)
                if expected is None:  # same loss object, the reference set exactly to the policy
                    expected = loss_fn(ref_chosen_logps=chosen, ref_rejected_logps=rejected, training=False,
                                       **tensors).losses  # fmt: skip
            else:
                measured = loss_fn(training=False, **tensors)
                expected = preference_loss(loss_fn.name, **loss_fn.hparams, margin_normalizer=loss_fn.normalizer,
                                           update_margin_stats=False, **tensors).losses  # fmt: skip
        worst["loss"] = max(worst["loss"], float((measured.losses.float() - expected.to(chosen.device)).abs().max()))
        losses.append(measured.losses.float().cpu())
        if ref is not None and loss_fn.name in LOG_RATIO_LOSSES:
            margin = (measured.chosen_rewards - measured.rejected_rewards).abs().max()
            worst["margin"] = max(worst["margin"], float(margin))
        if ref is not None and loss_fn.name in ADAPTIVE_EXP_LOSSES:
            h = loss_fn.hparams
            target = h["beta"] * min(h["adadpo_scale"], h["adadpo_clip"] or math.inf)
            worst["beta_w"] = max(worst["beta_w"], float((measured.metrics["beta_w"] - target).abs().max()))
    mean_loss = float(torch.cat(losses).mean())
    pairs = sum(len(rows) for rows in batches)
    if ref is not None:
        status = PASS if worst["ratio"] <= 1 else FAIL
        report.add(GROUP, "reference log-probs == policy", status, f"max |d logp| {fmt(worst['logp'])} "
                   f"(tol {tol} |logp| + 1e-3, {2 * pairs} sequences)", fix_reference)  # fmt: skip
    label = "closed form" if ref is not None else "formula at the measured log-probs"
    status = PASS if worst["loss"] <= tol else FAIL
    fix = fix_reference if ref is not None else f"the trainer's loss differs from adadpo.losses.{loss_fn.name}: a bug"
    report.add(GROUP, f"{loss_fn.name} loss == {label}", status,
               f"mean {fmt(mean_loss)} over {pairs} pairs, max |diff| {fmt(worst['loss'])} (tol {tol})", fix)  # fmt: skip
    if ref is not None and loss_fn.name in LOG_RATIO_LOSSES:
        status = PASS if worst["margin"] <= tol else FAIL
        report.add(GROUP, "reward margins == 0", status, f"max |margin| {fmt(worst['margin'])}", fix_reference)
    if ref is not None and loss_fn.name in ADAPTIVE_EXP_LOSSES:
        status = PASS if worst["beta_w"] <= tol else FAIL
        report.add(GROUP, "beta_w == beta", status, f"max |beta_w - beta| {fmt(worst['beta_w'])}", fix_reference)
    return {"step0_loss": mean_loss, "losses": torch.cat(losses)}
