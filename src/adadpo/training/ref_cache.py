"""Reference log-prob cache shared across runs (sweeps): every cell of a grid runs the same frozen reference model
over the same data, so compute it once.

Layout: `<ref_logps_cache_dir>/<key>/<split>.npz` + `<split>.json` (metadata + checksum). The key hashes everything
that changes the numbers: reference weights (a cheap strided sample of every tensor), its name/revision, dtype and
attention implementation, the token ids of every row after tokenization (covers data, tokenizer and chat template),
the chat template itself, `max_length`/`truncation_mode`, and packing. Files are written to a temp name and renamed, so a
crash leaves no half-written entry; a truncated or corrupt entry fails its checksum and is recomputed.
"""

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow.compute as pc
import torch
import torch.distributed as dist
from accelerate.utils import broadcast_object_list, is_peft_model
from datasets import Dataset
from torch.distributed.tensor import Shard
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from adadpo.files import write_atomic, write_json_atomic
from adadpo.training.trl_compat import get_attention_implementation


logger = logging.getLogger(__name__)
SAMPLES_PER_TENSOR = 1024


def _sample_positions(numel: int) -> torch.Tensor:
    """Flat indices of the strided sample taken from every tensor: the same positions however it is sharded."""
    step = max(1, numel // SAMPLES_PER_TENSOR)
    return torch.arange(0, numel, step)[:SAMPLES_PER_TENSOR]


def _local_view(tensor) -> tuple[torch.Tensor, int, tuple, int] | None:
    """(this rank's flat values, their offset in the full flattened tensor, the full shape, the full numel) for a
    tensor sharded in one contiguous flat range per rank; None for a tensor every rank holds whole.

    Seams (tested by `test_ref_cache_zero3.py`, which needs the ZeRO-3 key to equal the one-process key):
    - DeepSpeed ZeRO-3 keeps a parameter's flattened values split in equal contiguous partitions,
      rank r holding `[r * ds_tensor.ds_numel, (r + 1) * ds_tensor.ds_numel)` in `p.ds_tensor` (the last one padded);
      `p` itself is an empty placeholder outside a forward.
    - FSDP2 keeps a DTensor sharded on dim 0 in `torch.chunk` order: rank r holds rows `[r * c, (r + 1) * c)`,
      c = ceil(rows / world size).
    """
    if hasattr(tensor, "ds_tensor") and tensor.ds_tensor is not None:  # DeepSpeed ZeRO-3 partitioned parameter
        part = tensor.ds_tensor
        rank = dist.get_rank(group=tensor.ds_process_group)
        return part.detach().reshape(-1), rank * part.ds_numel, tuple(tensor.ds_shape), tensor.ds_numel
    if type(tensor).__name__ == "DTensor":
        shape = tuple(tensor.shape)
        if len(tensor.placements) != 1 or tensor.placements[0] != Shard(0) or not shape:
            return tensor.full_tensor().detach().reshape(-1), 0, shape, tensor.numel()  # collective, same on all ranks
        mesh = tensor.device_mesh
        rows_per_rank = -(-shape[0] // mesh.size())
        row_size = tensor.numel() // shape[0] if shape[0] else 0
        start_row = min(mesh.get_local_rank() * rows_per_rank, shape[0])
        return tensor.to_local().detach().reshape(-1), start_row * row_size, shape, tensor.numel()
    return None


def weights_fingerprint(model: torch.nn.Module, reduce_sum=None) -> str:
    """Hash of names, full shapes, dtypes and a strided sample of each tensor: cheap on 8B models, and any fine-tune
    touches the sampled values. PEFT adapters are excluded (the reference is the base model).

    Sharded weights (ZeRO-3, FSDP2) give the same hash as the whole model in one process: each rank fills in the
    sampled positions it holds and `reduce_sum` (a sum over processes; every process must call this then) completes
    the sample, a few KB per tensor instead of gathering the weights. Without `reduce_sum`, sharded weights are an
    error rather than a hash of empty placeholders (which would let a different reference hit a stale cache).
    """
    h = hashlib.sha256()
    samples, sharded = [], False
    for name, tensor in sorted(model.state_dict(keep_vars=True).items()):
        if "lora_" in name or ".ref." in name:
            continue
        local = _local_view(tensor)
        if local is None:
            flat, offset, shape, numel = tensor.detach().reshape(-1), 0, tuple(tensor.shape), tensor.numel()
        else:
            (flat, offset, shape, numel), sharded = local, True
        h.update(f"{name}:{shape}:{tensor.dtype}".encode())
        positions = _sample_positions(numel)
        sample = torch.zeros(len(positions), dtype=torch.float32)
        held = (positions >= offset) & (positions < offset + flat.numel())
        sample[held] = flat[(positions[held] - offset).to(flat.device)].float().cpu()
        samples.append(sample)
    sample = torch.cat(samples) if samples else torch.zeros(0)
    if sharded:
        if reduce_sum is None:
            raise ValueError("The weights are sharded across processes: pass `reduce_sum` (a sum over processes).")
        sample = reduce_sum(sample).cpu()  # each position is held by exactly one rank: the sum is exact
    h.update(sample.numpy().tobytes())
    return h.hexdigest()


def tokens_fingerprint(dataset: Dataset, columns=("prompt_ids", "chosen_ids", "rejected_ids")) -> str:
    """Hash of the tokenized rows, in order. `datasets`' own fingerprints are not stable across runs (they hash the
    map functions and the tokenizer object), so the key hashes the token ids themselves (fast, via Arrow)."""
    h = hashlib.sha256()
    for batch in dataset.select_columns(list(columns)).with_format("arrow").iter(batch_size=4096):
        for name in columns:
            column = batch.column(name)
            h.update(pc.list_value_length(column).to_numpy(zero_copy_only=False).tobytes())
            h.update(pc.list_flatten(column).to_numpy(zero_copy_only=False).tobytes())
    return h.hexdigest()


def _checksum(chosen: np.ndarray, rejected: np.ndarray) -> str:
    return hashlib.sha256(chosen.tobytes() + rejected.tobytes()).hexdigest()


@dataclass
class ReferenceLogpsCache:
    cache_dir: str
    lookups: dict = field(default_factory=dict)  # split name -> {key, hit}: what each precompute pass found

    @classmethod
    def from_args(cls, args):
        if not args.precompute_ref_log_probs or not args.ref_logps_cache_dir:
            return None
        return cls(args.ref_logps_cache_dir)

    def key(self, trainer, dataset: Dataset) -> str:
        """Every process must call this: sharded reference weights are hashed collectively."""
        parts = self.key_parts(trainer, dataset)
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]

    @staticmethod
    def key_parts(trainer, dataset: Dataset) -> dict:
        """What the key hashes, by name (every process must call this). Each entry is tested by changing it alone
        (`tests/training/test_ref_cache.py`): an entry added here needs a case there."""
        model = trainer.accelerator.unwrap_model(trainer.ref_model or trainer.model)
        base = model.get_base_model() if is_peft_model(model) else model
        args = trainer.args
        accelerator = trainer.accelerator
        return {
            "reference": base.config.name_or_path,
            "revision": (args.model_init_kwargs or {}).get("revision"),
            "weights": weights_fingerprint(
                base, reduce_sum=lambda t: accelerator.reduce(t.to(accelerator.device), reduction="sum")
            ),
            "dtype": str(base.dtype),
            # the reference forward runs under the run's autocast: bf16 log-probs are not fp32's (absent without
            # mixed precision, so earlier entries still hit)
            **({"mixed_precision": accelerator.mixed_precision} if accelerator.mixed_precision != "no" else {}),
            "attn_implementation": get_attention_implementation(base),
            "tokens": tokens_fingerprint(dataset),
            "chat_template": hashlib.sha256(str(trainer.processing_class.chat_template).encode()).hexdigest(),
            "tokenizer": trainer.processing_class.name_or_path,
            "max_length": args.max_length,
            "truncation_mode": args.truncation_mode,
            # LD-DPO weights the reference log-probs too (absent when unset, so earlier entries still hit)
            **({"ld_alpha": args.ld_alpha} if args.ld_alpha is not None else {}),
            # the collator says whether sequences are packed: `args.padding_free` is switched off while TRL's
            # __init__ runs (it would refuse it), which is when the reference log-probs are precomputed
            "collator": type(trainer.data_collator).__name__,
            "max_tokens_per_batch": args.max_tokens_per_batch,
        }

    def _paths(self, key: str, name: str) -> tuple[str, str]:
        folder = os.path.join(self.cache_dir, key)
        return os.path.join(folder, f"{name}.npz"), os.path.join(folder, f"{name}.json")

    def load(self, key: str, name: str, num_rows: int) -> tuple[np.ndarray, np.ndarray] | None:
        data_path, meta_path = self._paths(key, name)
        if not (os.path.exists(data_path) and os.path.exists(meta_path)):
            return None
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            with np.load(data_path) as arrays:
                chosen, rejected = arrays["ref_chosen_logps"], arrays["ref_rejected_logps"]
            if len(chosen) != num_rows or meta["checksum"] != _checksum(chosen, rejected):
                raise ValueError("row count or checksum mismatch")
        except Exception as error:  # truncated, corrupt, or stale: never use it
            logger.warning("Reference cache %s is unusable (%s); recomputing.", data_path, error)
            return None
        return chosen, rejected

    def save(self, key: str, name: str, chosen: np.ndarray, rejected: np.ndarray) -> None:
        data_path, meta_path = self._paths(key, name)
        write_atomic(data_path, lambda f: np.savez(f, ref_chosen_logps=chosen, ref_rejected_logps=rejected), True)
        write_json_atomic(meta_path, {"rows": len(chosen), "checksum": _checksum(chosen, rejected)})

    def compute(self, trainer, dataset: Dataset, name: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """One pass of the reference over `dataset`, sharded across processes and gathered (in order)."""
        loader = trainer.accelerator.prepare(
            DataLoader(dataset, batch_size=batch_size, collate_fn=trainer.data_collator, shuffle=False)
        )
        model = trainer.precompute_model()
        chosen, rejected = [], []
        for batch in tqdm(
            loader, desc=f"Reference log-probs ({name})", disable=not trainer.accelerator.is_main_process
        ):
            ref_chosen, ref_rejected = trainer.compute_ref_log_probs(model, batch)
            ref_chosen, ref_rejected = trainer.accelerator.gather_for_metrics((ref_chosen, ref_rejected))
            chosen.append(ref_chosen.float().cpu())
            rejected.append(ref_rejected.float().cpu())
        return torch.cat(chosen).numpy(), torch.cat(rejected).numpy()

    def lookup(self, trainer, dataset: Dataset, name: str) -> tuple[str, tuple[np.ndarray, np.ndarray] | None]:
        """(key, cached arrays or None), recorded in `lookups`. Every process must call this."""
        key = [self.key(trainer, dataset)]
        broadcast_object_list(key, from_process=0)  # ZeRO-3 shards weights: rank 0's key is everyone's
        key = key[0]
        cached = self.load(key, name, len(dataset))
        self.last_key, self.last_hit = key, cached is not None
        self.lookups[name] = {"key": key, "hit": cached is not None}
        return key, cached

    def get_or_compute(self, trainer, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        key, cached = self.lookup(trainer, dataset, name)
        if cached is None:
            chosen, rejected = self.compute(trainer, dataset, name, batch_size)
            if trainer.accelerator.is_main_process:
                self.save(key, name, chosen, rejected)
            trainer.accelerator.wait_for_everyone()
            logger.info("Reference log-probs for %s written to %s", name, self._paths(key, name)[0])
        else:
            chosen, rejected = cached
            logger.info("Reference log-probs for %s loaded from cache %s", name, key)
        return dataset.add_column("ref_chosen_logps", chosen.tolist()).add_column(
            "ref_rejected_logps", rejected.tolist()
        )
