"""Decisions every process must take together (skip a step, stop on a signal, split a micro-batch): one tiny
all-reduce, so that no process goes on alone into a collective the others never join (a hang)."""

import torch
import torch.distributed as dist


def _reduced(value: float, op) -> float:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces CUDA tensors only
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op)
    return float(tensor.item())


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is true on any of them (`flag` itself in one process)."""
    return _reduced(1.0 if flag else 0.0, dist.ReduceOp.MAX) > 0


def max_over_processes(value: int) -> int:
    """The largest `value` over the processes, on every process."""
    return int(_reduced(float(value), dist.ReduceOp.MAX))
