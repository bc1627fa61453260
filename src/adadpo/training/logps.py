"""Per-sequence summed completion log-probs of a preference micro-batch, padded or packed.

For sequence s with tokens x_1..x_n and completion positions C_s (prompt excluded),

    logp(s) = sum_{t in C_s, t > 1} log pi(x_t | x_<t),        length(s) = |{t in C_s, t > 1}|,

the quantity every loss of the DPO family compares (DPO, Rafailov et al. 2023, Eq. 7; SimPO and alpha-DPO divide it by
the length). The forward goes through TRL's fused LM head (`trl.trainer.utils.add_fused_lm_head`), which returns
per-token log-probs of the labels without materialising the (tokens x vocab) logits.

Padded and packed batches are reduced the same way: each scored position (a completion token predicted from its own
sequence) adds to its sequence's sum. TRL's options that change that sum or weigh the pair are applied here:
- `ld_alpha` (LD-DPO, Liu et al. 2024, arXiv 2409.06411): the tokens of the longer completion past the shorter one's
  length count `ld_alpha` times: logp(s) = sum_{pos <= shared} + ld_alpha sum_{pos > shared}, shared = min(|yw|, |yl|).
- `wpo` (WPO, Zhou et al. 2024, arXiv 2406.11827, eq. 2): each sequence's mean over its completion tokens of
  log p(token) - log sum_v p(v)^2, detached; exp of the chosen's plus the rejected's weighs the pair's loss.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from adadpo.training.packing import IGNORE_INDEX, is_packed_batch, packed_labels, uses_flash_varlen
from adadpo.training.sequence_parallel import SHARDED_BATCH_KEY, SequenceParallelGroup, is_sharded
from adadpo.training.trl_compat import fused_forward, fused_output, get_attention_implementation


@dataclass
class SequenceLogps:
    """Summed completion log-probs of the 2B sequences `[chosen_1..chosen_B, rejected_1..rejected_B]`.

    `per_token_logps` is the fused head's output as computed: `(2B, T-1)` for a padded batch (entry t scores token
    t+1), `(R, T)` for a packed one (entry t scores token t+1 of the same row, zero where nothing is scored).
    `wpo_log_weights` (2B,) is WPO's log weight of each sequence when asked for; `aux_loss` the MoE router loss the
    model returned when asked for.
    """

    logps: Tensor
    lengths: Tensor
    num_tokens: Tensor
    per_token_logps: Tensor | None = None
    wpo_log_weights: Tensor | None = None
    aux_loss: Tensor | None = None


def unwrap_model(model):
    """Peel DDP / DeepSpeed / `accelerate` wrappers (`.module`); PEFT models forward attributes themselves."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def packed_shift_labels(input_ids: Tensor, completion_mask: Tensor, sequence_ids: Tensor) -> Tensor:
    """Next-token labels for a packed batch: entry t is token t+1 when t+1 is a completion token of the same sequence
    as t, else -100 (`adadpo.training.packing.packed_labels` shifted left)."""
    shift_labels = torch.full_like(input_ids, IGNORE_INDEX)
    shift_labels[:, :-1] = packed_labels(input_ids, completion_mask, sequence_ids)[:, 1:]
    return shift_labels


def _segment_sum(values: Tensor, owner: Tensor, num_sequences: int) -> Tensor:
    """Sum of `values` per owner; owner `num_sequences` is the spare bucket of unscored positions, dropped."""
    return values.new_zeros(num_sequences + 1).index_add(0, owner, values)[:-1]


def _ld_weights(owner: Tensor, scored: Tensor, lengths: Tensor, ld_alpha: float, earlier: Tensor | None) -> Tensor:
    """LD-DPO's per-position weight: 1 up to the shorter completion of the pair, `ld_alpha` past it. A sequence's
    positions are contiguous in flat order (padded rows, packed segments), so its k-th scored token is at
    cumsum - (its first cumsum) + 1, plus the sequence's scored tokens on earlier sequence-parallel ranks (`earlier`)."""
    num_sequences = len(lengths)
    cumulative = torch.cumsum(scored.long(), dim=0)
    first = torch.full((num_sequences + 1,), cumulative.numel() + 1, dtype=torch.long, device=owner.device)
    first = first.scatter_reduce(0, owner, cumulative, reduce="amin")
    position = cumulative - first[owner] + 1
    if earlier is not None:
        position = position + torch.cat([earlier, earlier.new_zeros(1)])[owner]
    half = num_sequences // 2
    partner = torch.cat([torch.arange(half, num_sequences), torch.arange(0, half)]).to(lengths.device)
    shared = torch.cat([torch.minimum(lengths, lengths[partner]), lengths.new_zeros(1)])
    return torch.where(position <= shared[owner], 1.0, ld_alpha)


def _reduce(
    outputs, log_probs: Tensor, owner: Tensor, scored: Tensor, n: int, ld_alpha, wpo, group=None
) -> SequenceLogps:
    """Per-sequence sums (LD-weighted with `ld_alpha`), lengths and, with `wpo`, WPO's log weights, from flat
    per-position log-probs and each position's owner (`n` where nothing is scored). With a sequence-parallel `group`
    the positions are this rank's slice of the row, and every sum is completed over the group."""
    flat = log_probs.reshape(-1)
    lengths = torch.zeros(n + 1, dtype=torch.long, device=owner.device).index_add(0, owner, scored.long())[:-1]
    earlier = None
    if group is not None:
        earlier = group.sum_before_this_rank(lengths)
        lengths = group.total(lengths)
    weighted = (
        flat if ld_alpha is None else flat * _ld_weights(owner, scored, lengths, ld_alpha, earlier).to(flat.dtype)
    )
    logps = _segment_sum(weighted, owner, n)
    wpo_log_weights = None
    if wpo:
        log_sum_sq = fused_output(outputs, "log_sum_sq_probs")[..., -log_probs.size(-1) :].reshape(-1)
        aligned = _segment_sum((flat - log_sum_sq).detach() * scored, owner, n)
        wpo_log_weights = (aligned if group is None else group.total(aligned)) / lengths.clamp(min=1)
    return SequenceLogps(
        logps=logps if group is None else group.sum(logps),
        lengths=lengths,
        num_tokens=torch.zeros(()),  # set by the caller
        per_token_logps=log_probs,
        wpo_log_weights=wpo_log_weights,
        aux_loss=getattr(outputs, "aux_loss", None),
    )


def _packed_sequence_logps(model, batch: dict, ld_alpha, wpo, group, **forward_kwargs) -> SequenceLogps:
    input_ids, position_ids, sequence_ids = batch["input_ids"], batch["position_ids"], batch["sequence_ids"]
    num_sequences = 2 * int(batch["num_pairs"])
    if group is not None:  # a slice of the row: its labels were shifted before slicing (the next slice's first token)
        shift_labels = batch[SHARDED_BATCH_KEY]
    else:
        shift_labels = packed_shift_labels(input_ids, batch["completion_mask"], sequence_ids)
    if uses_flash_varlen(get_attention_implementation(unwrap_model(model))):
        # transformers only derives varlen `cu_seqlens` from position_ids for a single row (`_is_packed_sequence`);
        # with several rows it would run plain causal attention per row, across the sequences of each row.
        input_ids, position_ids, shift_labels = (x.reshape(1, -1) for x in (input_ids, position_ids, shift_labels))
    outputs = fused_forward(
        model,
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=None,
        shift_labels=shift_labels,
        **forward_kwargs,
    )
    scored = (shift_labels != IGNORE_INDEX).reshape(-1)
    owner = torch.where(scored, sequence_ids.reshape(-1), num_sequences)
    log_probs = outputs.log_probs.view_as(batch["input_ids"])
    out = _reduce(outputs, log_probs, owner, scored, num_sequences, ld_alpha, wpo, group)
    out.num_tokens = (sequence_ids >= 0).sum()  # this slice's: summed over the ranks, each token counts once
    return out


def _padded_sequence_logps(model, batch: dict, ld_alpha, wpo, **forward_kwargs) -> SequenceLogps:
    input_ids, completion_mask = batch["input_ids"], batch["completion_mask"]
    labels = input_ids.masked_fill(completion_mask == 0, IGNORE_INDEX)
    outputs = fused_forward(
        model, input_ids=input_ids, attention_mask=batch["attention_mask"], labels=labels, **forward_kwargs
    )
    # Prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens (as TRL does)
    log_probs = outputs.log_probs[:, -(input_ids.size(1) - 1) :]
    scored = (labels[:, 1:] != IGNORE_INDEX).reshape(-1)
    rows = torch.arange(input_ids.size(0), device=input_ids.device).unsqueeze(1).expand_as(log_probs).reshape(-1)
    owner = torch.where(scored, rows, input_ids.size(0))
    out = _reduce(outputs, log_probs, owner, scored, input_ids.size(0), ld_alpha, wpo)
    out.num_tokens = batch["attention_mask"].sum()
    return out


def sequence_logps(
    model,
    batch: dict,
    *,
    ld_alpha: float | None = None,
    wpo: bool = False,
    sequence_parallel: SequenceParallelGroup | None = None,
    **forward_kwargs,
):
    """One forward of `model` (patched with `add_fused_lm_head`, possibly DDP/PEFT-wrapped) over a preference batch.

    `batch` is either TRL's padded `DataCollatorForPreference` output (`input_ids`, `attention_mask`,
    `completion_mask`) or `DataCollatorForPackedPreference`'s packed one. Both give the same `logps` and `lengths`
    up to float round-off. Differentiable; call under `torch.no_grad()` for the reference model. `ld_alpha` and
    `wpo`: see the module docstring (`wpo` needs the fused head's `log_sum_sq_probs`, which TRL adds when its
    `use_weighting` is set). `forward_kwargs` go to the model unchanged (e.g. `output_router_logits`).

    A batch that is one rank's slice of a packed row (`adadpo.training.sequence_parallel`) needs that rank's
    `sequence_parallel` group: every returned quantity is then the whole sequence's, the same on every rank.
    """
    if is_sharded(batch) != (sequence_parallel is not None):
        raise ValueError(
            "sequence_logps: a sequence-parallel slice of a row needs its `sequence_parallel` group, and only such a "
            f"slice takes one (slice: {is_sharded(batch)}, group: {sequence_parallel is not None})."
        )
    if is_packed_batch(batch):
        return _packed_sequence_logps(model, batch, ld_alpha, wpo, sequence_parallel, **forward_kwargs)
    missing = [key for key in ("input_ids", "attention_mask", "completion_mask") if key not in batch]
    if missing:
        raise ValueError(
            f"sequence_logps needs a padded batch (input_ids, attention_mask, completion_mask) or a packed one "
            f"(input_ids, position_ids, completion_mask, sequence_ids, num_pairs, no attention_mask); missing {missing}."
        )
    return _padded_sequence_logps(model, batch, ld_alpha, wpo, **forward_kwargs)
