"""Collators of tokenized preference pairs: TRL's padded one with our per-pair columns, and the padding-free
("packed") one.

A padded preference micro-batch holds 2B rows `[chosen_1..chosen_B, rejected_1..rejected_B]`, each padded to the
longest sequence, so on long-tailed data most of the compute goes to pad tokens. The packed collator lays the 2B
sequences end to end in one row (or a few rows under a token budget) with `position_ids` restarting at every sequence
(see `adadpo.training.packing` for which attention implementations respect that);
`adadpo.training.logps.sequence_logps` then gives each sequence its summed log-prob through a segment sum over
`sequence_ids`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers.data.data_collator import DataCollatorMixin

from adadpo.training.packing import packed_labels
from adadpo.training.sequence_parallel import PAIR_COLUMNS_KEY, row_multiple
from adadpo.training.trl_compat import DataCollatorForPreference


# Per-pair floats carried through the collator unchanged when present in the examples.
PAIR_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps", "reward_margin")
EXAMPLES_KEY = "pair_examples"  # with `keep_examples`: the batch's own examples, to re-collate parts of it


@dataclass(frozen=True)
class PairExamples:
    """The examples a micro-batch was collated from, and the collator (an opaque object: device transfers and
    `_prepare_inputs` pass it through untouched). `adadpo.training.oom` re-collates parts of it."""

    examples: list
    collate: Callable

    def __len__(self) -> int:
        return len(self.examples)

    def parts(self, count: int) -> list["PairExamples"]:
        """`count` consecutive parts as even as possible (pairs kept whole, order kept)."""
        size, extra = divmod(len(self.examples), count)
        bounds = [i * size + min(i, extra) for i in range(count + 1)]
        return [PairExamples(self.examples[a:b], self.collate) for a, b in zip(bounds, bounds[1:]) if b > a]

    def batch(self) -> dict:
        return without_examples(self.collate(self.examples))

    def tokens(self) -> int:
        """Entries of its collated `input_ids` (padding included, as memory counts them)."""
        return self.batch()["input_ids"].numel()


def without_examples(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != EXAMPLES_KEY}


def with_examples(batch: dict, examples, collator) -> dict:
    return batch | {EXAMPLES_KEY: PairExamples(list(examples), collator)} if collator.keep_examples else batch


def pair_columns(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The `PAIR_COLUMNS` present in the examples, as (B,) float32 tensors."""
    return {
        column: torch.tensor([float(example[column]) for example in examples], dtype=torch.float32)
        for column in PAIR_COLUMNS
        if column in examples[0]
    }


@dataclass
class PreferenceCollator(DataCollatorForPreference):
    """TRL's padded collator, also passing through per-pair columns (e.g. MADPO's `reward_margin`)."""

    keep_examples: bool = False  # see EXAMPLES_KEY

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        return with_examples(pair_columns(examples) | batch, examples, self)  # TRL's own ref-logp tensors win


def first_fit_rows(lengths: list[int], max_tokens_per_row: int | None) -> list[list[int]]:
    """Assign sequences (by index) to rows of at most `max_tokens_per_row` tokens, first-fit decreasing.

    `None` puts every sequence in one row, in order. First-fit decreasing uses at most 11/9 OPT + 6/9 rows.
    """
    if max_tokens_per_row is None:
        return [list(range(len(lengths)))]
    rows, room = [], []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if lengths[index] > max_tokens_per_row:
            raise ValueError(
                f"A sequence of {lengths[index]} tokens does not fit in max_tokens_per_batch={max_tokens_per_row}. "
                "Set max_tokens_per_batch >= max_length (or set max_length to truncate sequences)."
            )
        row = next((r for r, free in enumerate(room) if free >= lengths[index]), None)
        if row is None:
            rows.append([])
            room.append(max_tokens_per_row)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= lengths[index]
    return [sorted(row) for row in rows]  # keep chosen-before-rejected order inside a row, for readability


@dataclass
class DataCollatorForPackedPreference(DataCollatorMixin):
    """Collate tokenized preference pairs (`prompt_ids`, `chosen_ids`, `rejected_ids`) into packed rows.

    Sequence `s` in `[0, 2B)` is `prompt + chosen` of pair `s` for `s < B`, `prompt + rejected` of pair `s - B`
    otherwise, truncated exactly like TRL's `DataCollatorForPreference` (which builds them). Returns
    `input_ids`, `position_ids`, `completion_mask`, `sequence_ids` (owner of each token, -1 on row padding), all
    `(R, T)` long; `num_pairs` (int B); and each `PAIR_COLUMNS` entry present in the examples as a `(B,)` float tensor.
    There is deliberately no `attention_mask`: its absence is what makes transformers look for packed `position_ids`.
    Row padding is a pseudo-sequence of pad tokens with its own positions restarting at 0, so it never mixes with a
    real sequence either.

    With `sequence_parallel_size` N > 1 (`adadpo.training.sequence_parallel`) the row is padded to a multiple of N and
    the batch also holds `labels` (the scored tokens, -100 elsewhere), and the per-pair columns as lists under
    `PAIR_COLUMNS_KEY`, so that DeepSpeed's adapter slices only the per-token tensors. `min_row_length` pads shorter
    rows to that length (gloo's all-gather, on CPU, needs the ranks' rows to be equally long).
    """

    pad_token_id: int
    max_length: int | None = None
    truncation_mode: str = "keep_start"
    max_tokens_per_batch: int | None = None
    pad_to_multiple_of: int | None = None
    sequence_parallel_size: int = 1
    min_row_length: int | None = None
    keep_examples: bool = False  # see EXAMPLES_KEY
    return_tensors: str = "pt"

    def __post_init__(self):
        if self.truncation_mode not in ("keep_start", "keep_end"):
            raise ValueError(f"truncation_mode must be 'keep_start' or 'keep_end', got {self.truncation_mode!r}.")
        if self.max_tokens_per_batch is not None:
            if self.max_tokens_per_batch < 1:
                raise ValueError(
                    f"max_tokens_per_batch must be a positive token count, got {self.max_tokens_per_batch}."
                )
            if self.max_length is not None and self.max_tokens_per_batch < self.max_length:
                raise ValueError(
                    f"max_tokens_per_batch={self.max_tokens_per_batch} is smaller than max_length={self.max_length}, "
                    "so a full-length sequence could not be packed. Set max_tokens_per_batch >= max_length."
                )

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if not examples:
            raise ValueError("DataCollatorForPackedPreference got an empty list of examples.")
        padded = DataCollatorForPreference(
            pad_token_id=self.pad_token_id, max_length=self.max_length, truncation_mode=self.truncation_mode
        ).torch_call([{k: example[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for example in examples])
        lengths = padded["attention_mask"].sum(dim=1).tolist()
        rows = first_fit_rows(lengths, self.max_tokens_per_batch)
        row_length = max(sum(lengths[s] for s in row) for row in rows)
        multiple = row_multiple(self.sequence_parallel_size, self.pad_to_multiple_of)
        if multiple:
            row_length = -(-row_length // multiple) * multiple
        row_length = max(row_length, self.min_row_length or 0)

        shape = (len(rows), row_length)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        completion_mask = torch.zeros(shape, dtype=torch.long)
        sequence_ids = torch.full(shape, -1, dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for s in row:
                end = start + lengths[s]
                input_ids[r, start:end] = padded["input_ids"][s, : lengths[s]]
                completion_mask[r, start:end] = padded["completion_mask"][s, : lengths[s]]
                position_ids[r, start:end] = torch.arange(lengths[s])
                sequence_ids[r, start:end] = s
                start = end
            position_ids[r, start:] = torch.arange(row_length - start)  # padding restarts too: its own pseudo-sequence

        batch = {
            "input_ids": input_ids,
            "position_ids": position_ids,
            "completion_mask": completion_mask,
            "sequence_ids": sequence_ids,
            "num_pairs": len(examples),
        }
        if self.sequence_parallel_size > 1:
            batch["labels"] = packed_labels(input_ids, completion_mask, sequence_ids)
            batch[PAIR_COLUMNS_KEY] = {k: v.tolist() for k, v in pair_columns(examples).items()}
            return batch
        return with_examples(batch | pair_columns(examples), examples, self)


def preference_collator(
    args, tokenizer, sequence_parallel_size: int = 1, min_row_length: int | None = None, keep_examples: bool = False
) -> PreferenceCollator | DataCollatorForPackedPreference:
    """The collator a run uses: packed rows with `padding_free` (sliceable over `sequence_parallel_size` ranks), else
    TRL's padded batches with our pair columns; both truncate to `max_length` with `truncation_mode`, pad to a
    multiple of `pad_to_multiple_of`, and pad with TRL's choice of token: `pad_token`, else the tokenizer's pad token,
    else EOS (padding is never scored)."""
    pad_token = args.pad_token or tokenizer.pad_token or tokenizer.eos_token
    common = {
        "pad_token_id": tokenizer.convert_tokens_to_ids(pad_token),
        "max_length": args.max_length,
        "truncation_mode": args.truncation_mode,
        "pad_to_multiple_of": args.pad_to_multiple_of,
        "keep_examples": keep_examples,
    }
    if args.padding_free:
        return DataCollatorForPackedPreference(
            **common,
            max_tokens_per_batch=args.max_tokens_per_batch,
            sequence_parallel_size=sequence_parallel_size,
            min_row_length=min_row_length,
        )
    return PreferenceCollator(**common)
