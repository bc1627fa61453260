"""Check 3, packing on the real kernel: packed per-sequence log-probs with the recipe's attention (e.g.
flash_attention_2's varlen kernel) equal padded log-probs with a mask-based implementation, on real micro-batches.
A negative control, the same packed row with position ids that do not restart, must differ: it shows the check can
see a cross-sequence leak with this kernel on this hardware."""

import torch

from adadpo.preflight.batches import collate, model_dtype, pairs, policy_logps
from adadpo.preflight.identity import TOLERANCE
from adadpo.preflight.report import FAIL, PASS, Report, fmt
from adadpo.training.collators import PreferenceCollator
from adadpo.training.logps import sequence_logps, unwrap_model
from adadpo.training.packing import MASK_PACKED_IMPLEMENTATIONS
from adadpo.training.trl_compat import attention_implementation, get_attention_implementation


GROUP = "3 packing"


def _unrestarted(batch: dict) -> dict:
    rows, length = batch["input_ids"].shape
    positions = torch.arange(length, device=batch["input_ids"].device).expand(rows, length)
    return dict(batch, position_ids=positions.contiguous())


def check_packing(report: Report, trainer, batches: list[list[dict]]) -> None:
    args = trainer.args
    if not args.padding_free:
        report.add(GROUP, "packed == padded log-probs", PASS, "not used (padding_free: false)")
        return
    model = unwrap_model(trainer.model)
    attn = get_attention_implementation(model)
    mask_attn = attn if attn in MASK_PACKED_IMPLEMENTATIONS else "sdpa"
    pad_id = trainer.data_collator.pad_token_id
    padded_collator = PreferenceCollator(
        pad_token_id=pad_id, max_length=args.max_length, truncation_mode=args.truncation_mode
    )
    tol = TOLERANCE.get(model_dtype(trainer), 2e-2)
    sp_size = trainer.parallelism.sp_size
    worst, control_gap, sliced_gap, sequences = 0.0, 0.0, 0.0, 0
    for rows in batches:
        packed = collate(trainer, rows)
        with torch.no_grad():
            packed_logps = policy_logps(trainer, packed).logps.float()  # under SP: sliced, as training runs it
            control = policy_logps(trainer, _unrestarted(packed)).logps.float()
            with attention_implementation(model, mask_attn):
                padded = sequence_logps(trainer.model_wrapped, collate(trainer, rows, padded_collator)).logps.float()
            if sp_size > 1:  # the whole row on this rank (DeepSpeed's attention steps aside in eval mode)
                whole = sequence_logps(trainer.model_wrapped, pairs(packed)).logps.float()
        scale = padded.abs() * tol + 1e-3
        worst = max(worst, float(((packed_logps - padded).abs() / scale).max()))
        control_gap = max(control_gap, float(((control - padded).abs() / scale).max()))
        if sp_size > 1:
            sliced_gap = max(sliced_gap, float(((packed_logps - whole).abs() / scale).max()))
        sequences += len(padded)
    if sp_size > 1:
        report.add(
            GROUP,
            f"sequence-parallel slices ({sp_size} ranks) == whole row",
            PASS if sliced_gap <= 1 else FAIL,
            f"max |d logp| / tol {fmt(sliced_gap)} over {sequences} sequences",
            "the slices of a row do not add up to the whole row on this hardware: run without sequence "
            "parallelism (remove parallelism_config from the accelerate config) and report it",
        )
    report.add(
        GROUP,
        f"packed ({attn}) == padded ({mask_attn})",
        PASS if worst <= 1 else FAIL,
        f"max |d logp| / tol {fmt(worst)} over {sequences} sequences (tol {tol} |logp| + 1e-3)",
        f"attn_implementation={attn!r} attends across packed sequences here: set `padding_free: false`, or "
        "another `attn_implementation` (sdpa packs exactly; docs/packing.md)",
    )
    report.add(
        GROUP,
        "negative control (positions not restarted) differs",
        PASS if control_gap > 1 else FAIL,
        f"max |d logp| / tol {fmt(control_gap)} (must be > 1)",
        "the check cannot see a cross-sequence leak with this kernel: do not trust packing here; set "
        "`padding_free: false`",
    )
