"""Which attention implementations can run padding-free ("packed") preference batches, and how to tell a packed
batch from a padded one.

A packed micro-batch lays the 2B sequences `[chosen_1..chosen_B, rejected_1..rejected_B]` end to end in one row (or a
few rows under a token budget; `adadpo.training.collators`), with `position_ids` restarting at 0 at every sequence
start and no attention mask. transformers reads those restarts as sequence boundaries
(`masking_utils.find_packed_sequence_indices` for the mask-based `sdpa`/`eager`/`flex_attention`, `position_ids`-derived
`cu_seqlens` for flash-attention's varlen kernel), so no token attends across sequences; other implementations would,
and are refused.
"""

import re

import torch

from adadpo.training.trl_compat import get_attention_implementation


# Attention implementations whose causal mask is built by `masking_utils` from packed `position_ids`.
MASK_PACKED_IMPLEMENTATIONS = ("sdpa", "eager", "flex_attention")
# Flash-attention implementations that switch to the varlen kernel on packed `position_ids` (one flattened row),
# including the hub kernels transformers itself substitutes for them (`FLASH_ATTN_KERNEL_FALLBACK`).
FLASH_PACKED_IMPLEMENTATIONS = (
    "flash_attention_2",
    "flash_attention_3",
    "flash_attention_4",
    "kernels-community/flash-attn2",
    "kernels-community/flash-attn3",
    "kernels-community/vllm-flash-attn3",
    "kernels-community/flash-attn4",
    "kernels-community/aiter-flash-attn",
)
SUPPORTED_PACKING_IMPLEMENTATIONS = MASK_PACKED_IMPLEMENTATIONS + FLASH_PACKED_IMPLEMENTATIONS
PACKED_BATCH_KEYS = ("input_ids", "position_ids", "completion_mask", "sequence_ids", "num_pairs")
IGNORE_INDEX = -100


def _strip_kernel_revision(attn_implementation: str) -> str:
    """`"kernels-community/flash-attn2@v1"` -> `"kernels-community/flash-attn2"` (a pinned revision is the same kernel)."""
    return re.sub(r"@[^/:]+$", "", attn_implementation.strip())


def uses_flash_varlen(attn_implementation: str | None) -> bool:
    """Whether packing goes through flash-attention's varlen path, which needs the whole batch as one row."""
    return (
        attn_implementation is not None and _strip_kernel_revision(attn_implementation) in FLASH_PACKED_IMPLEMENTATIONS
    )


def check_packing_supported(attn_implementation: str | None) -> None:
    """Refuse attention implementations that would silently attend across packed sequences.

    `None` is transformers' default (`sdpa`, or `eager` where sdpa is unavailable), both supported. Anything else
    (`paged|eager`, other hub kernels, custom registered functions) builds no packed-sequence mask.
    """
    if attn_implementation is None:
        return
    name = _strip_kernel_revision(attn_implementation)
    if name in SUPPORTED_PACKING_IMPLEMENTATIONS:
        return
    raise ValueError(
        f"padding_free=True (packed sequences) does not work with attn_implementation={attn_implementation!r}: it would "
        "let tokens attend across the packed sequences. Set `attn_implementation` in the recipe's model arguments to "
        f"one of {list(SUPPORTED_PACKING_IMPLEMENTATIONS)} (flash_attention_2 on GPU, sdpa or eager on CPU), or set "
        "`padding_free: false`."
    )


def check_packed_model(model, peft_config=None) -> None:
    """The one check that `model` (with `peft_config`, if TRL is to apply it) can train on packed batches: its
    attention implementation respects packed boundaries, and no prompt-learning PEFT method prepends virtual tokens
    (they would go to each packed row, not to each sequence). Callers: `AdaDPOTrainer` at init, and anything that
    calls `sequence_logps` on packed batches outside it."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):  # DDP / DeepSpeed wrappers
        model = model.module
    peft_config = peft_config or getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        raise ValueError(
            f"padding_free=True cannot be used with the prompt-learning PEFT method {peft_config.peft_type}: its "
            "virtual tokens are prepended to each packed row, not to each sequence. Use LoRA-style adapters or set "
            "`padding_free: false`."
        )
    check_packing_supported(get_attention_implementation(model))


def is_packed_batch(batch: dict) -> bool:
    """A batch from `DataCollatorForPackedPreference` (as opposed to TRL's padded `DataCollatorForPreference`)."""
    return "sequence_ids" in batch and "position_ids" in batch and batch.get("attention_mask") is None


def packed_labels(input_ids: torch.Tensor, completion_mask: torch.Tensor, sequence_ids: torch.Tensor) -> torch.Tensor:
    """The tokens a packed row scores, in place (-100 elsewhere): completion tokens predicted from their own sequence,
    so never the first token of a sequence (which would be predicted from the previous sequence's last token) and
    never row padding. Shifted left by one, they are the next-token labels of each position."""
    same_sequence = torch.zeros_like(completion_mask, dtype=torch.bool)
    same_sequence[:, 1:] = (sequence_ids[:, 1:] == sequence_ids[:, :-1]) & (sequence_ids[:, 1:] >= 0)
    return input_ids.masked_fill(~(same_sequence & completion_mask.bool()), IGNORE_INDEX)
