"""A micro-batch whose forward runs out of memory is split, and its parts accumulate to the same optimizer step.

The loss is computed once, on the whole micro-batch, so that nothing that couples its pairs changes (CPO/ORPO's
mean length, aot's sort, alpha-DPO's margin statistics, every logged metric): the parts' per-sequence log-probs come
from forwards without a graph, the loss and d(loss)/d(log-prob of each sequence) from them, and then each part's
forward with a graph is backpropagated with `sum(logps * d)`, whose gradient is exactly that part's share
(the "gradient cache" argument: the loss depends on the weights only through the per-sequence log-probs). A part
that still runs out of memory is halved again, down to one pair. The decision to split is taken by every process
together (one all-reduce before any backward), so that one process's OOM splits that micro-batch everywhere and
no process waits alone in a collective. Later micro-batches at least as long as one that ran out of memory are split
at once, into parts shorter than it.

Where a forward itself runs collectives (ZeRO-3 and FSDP gather the weights, sequence parallelism exchanges
activations), a process that fails mid-forward leaves the others inside one; there, and in a backward (the
gradients of the step are partly accumulated), an OOM stops the run with a message (`OutOfMemoryStop`) instead.
"""

import gc
import logging
from collections.abc import Callable

import torch

from adadpo.training.agreement import any_process, max_over_processes
from adadpo.training.collators import PairExamples
from adadpo.training.logps import SequenceLogps


logger = logging.getLogger(__name__)


class OutOfMemoryStop(RuntimeError):
    pass


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def attempt(compute: Callable):
    """(result, None), or (None, the OOM's message) with the failed attempt's memory released."""
    try:
        return compute(), None
    except torch.OutOfMemoryError as error:
        message = str(error).splitlines()[0] if str(error) else "out of memory"
    release_memory()  # outside the handler: the traceback's frames (and their tensors) are gone by now
    return None, message


class MicroBatchSplitter:
    """Per process: the token count of the shortest micro-batch (or part) that ran out of memory."""

    def __init__(self):
        self.failed_tokens: int | None = None
        self.failed_anywhere = False  # on every process alike: set after an agreed failure
        self.splits = 0  # micro-batches split so far (logged)

    def preferred_parts(self, tokens: int, pairs: int) -> int:
        """Into how many parts to split a micro-batch of `tokens` at once: halve until a part is below the shortest
        that ran out of memory (all processes then take the largest count; no collective until a failure)."""
        if not self.failed_anywhere:
            return 1
        parts = 1
        while self.failed_tokens is not None and tokens / parts >= self.failed_tokens and parts < pairs:
            parts *= 2
        return max_over_processes(min(parts, pairs))

    def record(self, tokens: int) -> None:
        self.failed_tokens = tokens if self.failed_tokens is None else min(self.failed_tokens, tokens)


def agreed_failure(failed_message: str | None) -> bool:
    """Whether any process ran out of memory in its attempt (every process gets the same answer)."""
    return any_process(failed_message is not None)


def stop_message(pairs: int, tokens: int, where: str) -> str:
    return (
        f"Out of memory in the {where} of a micro-batch of {pairs} pair(s), {tokens} tokens (padded), not "
        "split further (one pair per part, or `oom_resplit` off or unavailable here: see the log). Lower `max_length` (or `max_prompt_length`), set `gradient_checkpointing: true`, shard more "
        "(ZeRO-3, offload) or split each sequence over GPUs with sequence parallelism (docs/long_context.md); the "
        "last checkpoint on disk is intact."
    )


def _join(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Parts' `[chosen..., rejected...]` tensors as the whole micro-batch's: all chosen, then all rejected."""
    halves = [t.chunk(2) for t in tensors]
    return torch.cat([*(c for c, _ in halves), *(r for _, r in halves)])


def joined_parts(results: list) -> tuple[SequenceLogps, tuple]:
    """The (policy, (ref_chosen, ref_rejected)) of each part, as one micro-batch's (the log-probs detached)."""
    policies = [policy for policy, _ in results]
    wpo = [p.wpo_log_weights for p in policies]
    policy = SequenceLogps(
        logps=_join([p.logps.detach() for p in policies]),
        lengths=_join([p.lengths for p in policies]),
        num_tokens=sum(p.num_tokens for p in policies),
        wpo_log_weights=None if wpo[0] is None else _join(wpo),
    )
    references = [refs for _, refs in results]
    if references[0][0] is None:
        return policy, (None, None)
    return policy, tuple(torch.cat([refs[i] for refs in references]) for i in (0, 1))


def pair_slices(per_sequence: torch.Tensor, parts: list[PairExamples]) -> list[torch.Tensor]:
    """`[chosen..., rejected...]` values of a micro-batch cut into its parts' own `[chosen..., rejected...]`."""
    chosen, rejected = per_sequence.chunk(2)
    out, start = [], 0
    for part in parts:
        end = start + len(part)
        out.append(torch.cat([chosen[start:end], rejected[start:end]]))
        start = end
    return out


def resplit_unavailable(trainer) -> str | None:
    """Why the micro-batch cannot be split exactly under this trainer's setup, or None."""
    if trainer.parallelism.enabled:
        return "sequence parallelism: one pair per micro-batch, and its forward exchanges activations"
    if trainer.is_fsdp_enabled:
        return "FSDP gathers the weights inside the forward"
    if trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3:
        return "ZeRO-3 gathers the weights inside the forward"
    if trainer.args.accelerator_config.dispatch_batches:
        return "`dispatch_batches` sends batches from process 0, which cannot carry a micro-batch's examples"
    if trainer.aux_loss_enabled:
        return "the MoE router loss depends on the whole micro-batch's routing"
    if trainer.args.neftune_noise_alpha:
        return "NEFTune draws new embedding noise in each forward, so a part's two forwards would differ"
    model = trainer.model
    attention_dropout = getattr(getattr(model, "config", None), "attention_dropout", 0.0) or 0.0
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()) or attention_dropout > 0:
        return "dropout is active (`disable_dropout: false`), so a part's two forwards would differ"
    return None
