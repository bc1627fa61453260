"""Check 5, memory and time: full training steps (forward, backward, optimizer) on the longest micro-batch the data
can produce under the recipe's batching, so an out-of-memory error shows here rather than at step N; peak memory per
device against its total; tokens per second and the estimated wall time of the whole run. The weights are snapshot
before and restored after, so nothing is trained."""

import math
import os
import resource
import time

import torch
from transformers import TrainerCallback

from adadpo.preflight.report import FAIL, PASS, WARN, Report, fmt
from adadpo.training.ref_cache import weights_fingerprint


GROUP = "5 memory and time"
MEMORY_WARN = 0.9  # peak above this share of the device leaves no room for allocator fragmentation


def sequence_tokens(row: dict, max_length: int | None) -> tuple[int, int]:
    """Tokens of prompt+chosen and prompt+rejected after the collator's truncation."""
    p = len(row["prompt_ids"])
    cap = max_length or math.inf
    return tuple(int(min(cap, p + len(row[k]))) for k in ("chosen_ids", "rejected_ids"))


def longest_rows(dataset, batch_size: int, max_length: int | None, packed: bool) -> tuple[list[int], int]:
    """Indices of the costliest micro-batch (padded: the longest sequence pads all 2B rows; packed: the most tokens)
    and its real token count."""
    lengths = [
        sequence_tokens(row, max_length)
        for row in dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
    ]
    cost = [sum(pair) if packed else max(pair) for pair in lengths]
    top = sorted(range(len(lengths)), key=lambda i: -cost[i])[:batch_size]
    return top, sum(sum(lengths[i]) for i in top)


def dataset_tokens(dataset, max_length: int | None) -> int:
    return sum(
        sum(sequence_tokens(row, max_length))
        for row in dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
    )


def _local(param):
    return param.ds_tensor if getattr(param, "ds_tensor", None) is not None else param.data  # ZeRO-3: this rank's part


def snapshot(model) -> dict:
    return {name: _local(p).detach().to("cpu", copy=True) for name, p in model.named_parameters()}


def restore(model, saved: dict) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            _local(p).copy_(saved[name].to(_local(p).device))


def fingerprint(trainer) -> str:
    accelerator = trainer.accelerator
    return weights_fingerprint(
        trainer.accelerator.unwrap_model(trainer.model_wrapped),
        reduce_sum=lambda t: accelerator.reduce(t.to(accelerator.device), reduction="sum"),
    )


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (the last one is reported: the first carries one-off setup costs)."""

    def __init__(self):
        self.times, self._start = [], None

    def _sync(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self._start)


def peak_memory(device) -> tuple[float, float, str]:
    """(peak bytes, device total bytes, what was measured) for this process."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return float(torch.cuda.max_memory_allocated(device)), float(total), "torch.cuda.max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return float(rss), float(total), "peak RSS (CPU)"


def report_resources(report: Report, trainer, timer: StepTimer, step_tokens: int, run_tokens: int, run_steps):
    accelerator = trainer.accelerator
    peak, total, what = peak_memory(accelerator.device)
    peaks = accelerator.gather(torch.tensor([peak], device=accelerator.device)).cpu().tolist()
    share = max(peaks) / total
    per_device = ", ".join(f"{p / 2**30:.2f}" for p in peaks)
    report.add(
        GROUP,
        "peak memory per device",
        WARN if share > MEMORY_WARN else PASS,
        f"{per_device} GiB of {total / 2**30:.1f} GiB ({share:.0%}, {what})",
        "little headroom: lower `per_device_train_batch_size` (accumulation keeps the global batch), set "
        "`gradient_checkpointing: true` or `max_tokens_per_batch`, or shard more (ZeRO-3, offload)",
    )
    seconds = timer.times[-1]
    tokens_per_s = step_tokens / seconds
    report.add(
        GROUP,
        "step on the longest micro-batch",
        PASS,
        f"{fmt(seconds, 3)} s per optimizer step, {step_tokens} tokens, {tokens_per_s:,.0f} tokens/s",
    )
    hours = run_tokens / tokens_per_s / 3600
    report.add(
        GROUP,
        "estimated run time",
        PASS,
        f"{fmt(hours, 3)} h for {run_tokens:,} tokens ({run_steps} steps; at the longest batch's rate)",
    )
    return {
        "peak_memory_bytes": peaks,
        "device_total_bytes": total,
        "step_seconds": seconds,
        "tokens_per_second": tokens_per_s,
        "estimated_hours": hours,
    }


def oom_fix() -> str:
    return (
        "out of memory on the longest batch: lower `per_device_train_batch_size` (accumulation keeps the global "
        "batch), set `gradient_checkpointing: true`, `max_length` or `max_tokens_per_batch`, or use ZeRO-3/offload "
        "(the run itself would split such micro-batches with `oom_resplit`, at the cost of extra forwards)"
    )


def report_oom(report: Report, error: Exception) -> None:
    report.add(
        GROUP, "step on the longest micro-batch", FAIL, f"{type(error).__name__}: {str(error)[:120]}", oom_fix()
    )
