"""Real micro-batches for the preflight checks, and where their reference log-probs come from."""

import contextlib

import torch

from adadpo.training.logps import sequence_logps, unwrap_model
from adadpo.training.sequence_parallel import attention_over_group, slice_row, with_pair_columns


def micro_batches(dataset, batch_size: int, count: int, start: int = 0) -> list[list[dict]]:
    """`count` consecutive micro-batches of `batch_size` rows (fewer if the data runs out), as rows: each check
    collates them the way it needs (the recipe's collator, or padded for comparison)."""
    rows = dataset.select(range(start, min(len(dataset), start + batch_size * count)))
    rows = [rows[i] for i in range(len(rows))]
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def collate(trainer, rows: list[dict], collator=None) -> dict:
    return to_device((collator or trainer.data_collator)(rows), trainer.accelerator.device)


def pairs(batch: dict) -> dict:
    """A collated batch with its per-pair columns readable (they travel nested under sequence parallelism)."""
    return with_pair_columns(batch)


@contextlib.contextmanager
def _sliced(trainer, batch: dict):
    """(batch, group) as training computes it: under sequence parallelism this rank's slice of the row, the model's
    attention across the group; else the batch itself."""
    group = trainer.sequence_parallel_group()  # the checks run once accelerate has prepared the model
    if group is None:
        yield pairs(batch), None
        return
    with attention_over_group(trainer.model_wrapped):
        yield pairs(slice_row(batch, group)), group


def policy_logps(trainer, batch: dict, **options):
    """The policy's `SequenceLogps` of a collated micro-batch, as a training step computes them (so the checks run
    under sequence parallelism when the run does)."""
    with _sliced(trainer, batch) as (inputs, group):
        return sequence_logps(trainer.model_wrapped, inputs, sequence_parallel=group, **options)


def model_dtype(trainer) -> torch.dtype:
    return unwrap_model(trainer.model).dtype


class ReferenceSource:
    """How a run gets its reference log-probs: `reference-free`, `live` (a reference model, or the PEFT policy with
    its adapter off, every step), `precomputed` (one pass of the untrained policy before training, TRL's or our
    cache), or `cached` (a cache entry that hit). `lookups` are the cache's (`ReferenceLogpsCache.lookups`)."""

    def __init__(self, trainer):
        self.trainer = trainer
        args = trainer.args
        if not trainer.loss_fn.needs_reference:
            self.mode = "reference-free"
        elif not args.precompute_ref_log_probs:
            self.mode = "live"
        else:
            lookup = (trainer.ref_cache.lookups.get("train") if trainer.ref_cache is not None else None) or {}
            self.mode = "cached" if lookup.get("hit") else "precomputed"
        self.lookup = lookup if self.mode in ("cached", "precomputed") else {}

    def describe(self) -> str:
        if self.mode == "live":
            ref = self.trainer.ref_model
            name = unwrap_model(ref).config.name_or_path if ref else "adapter off"
            return f"live reference ({name})"
        if self.lookup:
            return f"{self.mode}: cache key {self.lookup['key']} ({'hit' if self.lookup['hit'] else 'miss'})"
        return self.mode if self.mode != "precomputed" else "precomputed by TRL at train start (not cached)"

    def logps(self, batch: dict):
        """(chosen, rejected) reference log-probs of a collated batch, as training would get them; None if
        reference-free. A cache miss or TRL's precompute would run `compute_ref_log_probs` with the untrained
        policy, which is the policy now, so that is what runs here."""
        trainer = self.trainer
        if self.mode == "reference-free":
            return None
        if self.mode == "cached":
            return pairs(batch)["ref_chosen_logps"], pairs(batch)["ref_rejected_logps"]
        if self.mode == "precomputed":  # on whole sequences, before training, also under sequence parallelism
            return trainer.compute_ref_log_probs(trainer.ref_model or trainer.model_wrapped, batch)
        with _sliced(trainer, batch) as (inputs, group):
            return trainer.reference_logps(inputs, group)
