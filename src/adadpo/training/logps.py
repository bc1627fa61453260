"""Per-sequence summed completion log-probs of a preference micro-batch, padded or packed.

For sequence s with tokens x_1..x_n and completion positions C_s (prompt excluded),

    logp(s) = sum_{t in C_s, t > 1} log pi(x_t | x_<t),        length(s) = |{t in C_s, t > 1}|,

the quantity every loss of the DPO family compares (DPO, Rafailov et al. 2023, Eq. 7; SimPO and alpha-DPO divide it by
the length). The forward goes through TRL's fused LM head (`trl.trainer.utils.add_fused_lm_head`), which returns
per-token log-probs of the labels without materialising the (tokens x vocab) logits.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from adadpo.training.packing import is_packed_batch, uses_flash_varlen
from adadpo.training.trl_compat import fused_log_probs, get_attention_implementation


IGNORE_INDEX = -100


@dataclass
class SequenceLogps:
    """Summed completion log-probs of the 2B sequences `[chosen_1..chosen_B, rejected_1..rejected_B]`.

    `per_token_logps` is the fused head's output as computed: `(2B, T-1)` for a padded batch (entry t scores token
    t+1), `(R, T)` for a packed one (entry t scores token t+1 of the same row, zero where nothing is scored).
    """

    logps: Tensor
    lengths: Tensor
    num_tokens: Tensor
    per_token_logps: Tensor | None = None


def unwrap_model(model):
    """Peel DDP / DeepSpeed / `accelerate` wrappers (`.module`); PEFT models forward attributes themselves."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def packed_shift_labels(input_ids: Tensor, completion_mask: Tensor, sequence_ids: Tensor) -> Tensor:
    """Next-token labels for a packed batch: entry t is token t+1 when t+1 is a completion token of the same sequence
    as t, else -100. So the first token of every sequence (and all row padding) is never predicted from the previous
    sequence's last token."""
    same_sequence = (sequence_ids[:, 1:] == sequence_ids[:, :-1]) & (sequence_ids[:, 1:] >= 0)
    scored = same_sequence & completion_mask[:, 1:].bool()
    shift_labels = torch.full_like(input_ids, IGNORE_INDEX)
    shift_labels[:, :-1] = input_ids[:, 1:].masked_fill(~scored, IGNORE_INDEX)
    return shift_labels


def _packed_sequence_logps(model, batch: dict, **forward_kwargs) -> SequenceLogps:
    input_ids, position_ids, sequence_ids = batch["input_ids"], batch["position_ids"], batch["sequence_ids"]
    num_sequences = 2 * int(batch["num_pairs"])
    shift_labels = packed_shift_labels(input_ids, batch["completion_mask"], sequence_ids)
    if uses_flash_varlen(get_attention_implementation(unwrap_model(model))):
        # transformers only derives varlen `cu_seqlens` from position_ids for a single row (`_is_packed_sequence`);
        # with several rows it would run plain causal attention per row, across the sequences of each row.
        input_ids, position_ids, shift_labels = (x.reshape(1, -1) for x in (input_ids, position_ids, shift_labels))
    log_probs = fused_log_probs(
        model,
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=None,
        shift_labels=shift_labels,
        **forward_kwargs,
    )
    scored = (shift_labels != IGNORE_INDEX).reshape(-1)
    # Segment sum: every scored position adds to its sequence; the rest go to a spare bucket (index 2B), dropped.
    owner = torch.where(scored, sequence_ids.reshape(-1), num_sequences)
    logps = log_probs.new_zeros(num_sequences + 1).index_add(0, owner, log_probs.reshape(-1))[:-1]
    lengths = torch.zeros(num_sequences + 1, dtype=torch.long, device=owner.device).index_add(0, owner, scored.long())
    return SequenceLogps(
        logps=logps,
        lengths=lengths[:-1],
        num_tokens=(sequence_ids >= 0).sum(),
        per_token_logps=log_probs.view_as(batch["input_ids"]),
    )


def _padded_sequence_logps(model, batch: dict, **forward_kwargs) -> SequenceLogps:
    input_ids, completion_mask = batch["input_ids"], batch["completion_mask"]
    labels = input_ids.masked_fill(completion_mask == 0, IGNORE_INDEX)
    log_probs = fused_log_probs(
        model, input_ids=input_ids, attention_mask=batch["attention_mask"], labels=labels, **forward_kwargs
    )
    # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens (as TRL does)
    log_probs = log_probs[:, -(input_ids.size(1) - 1) :]
    return SequenceLogps(
        logps=log_probs.sum(dim=1),
        lengths=(labels[:, 1:] != IGNORE_INDEX).sum(dim=1),
        num_tokens=batch["attention_mask"].sum(),
        per_token_logps=log_probs,
    )


def sequence_logps(model, batch: dict, **forward_kwargs) -> SequenceLogps:
    """One forward of `model` (patched with `add_fused_lm_head`, possibly DDP/PEFT-wrapped) over a preference batch.

    `batch` is either TRL's padded `DataCollatorForPreference` output (`input_ids`, `attention_mask`,
    `completion_mask`) or `DataCollatorForPackedPreference`'s packed one. Both give the same `logps` and `lengths`
    up to float round-off. Differentiable; call under `torch.no_grad()` for the reference model. `forward_kwargs`
    go to the model unchanged.
    """
    if is_packed_batch(batch):
        return _packed_sequence_logps(model, batch, **forward_kwargs)
    missing = [key for key in ("input_ids", "attention_mask", "completion_mask") if key not in batch]
    if missing:
        raise ValueError(
            f"sequence_logps needs a padded batch (input_ids, attention_mask, completion_mask) or a packed one "
            f"(input_ids, position_ids, completion_mask, sequence_ids, num_pairs, no attention_mask); missing {missing}."
        )
    return _padded_sequence_logps(model, batch, **forward_kwargs)
