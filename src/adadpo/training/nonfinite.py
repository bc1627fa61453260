"""Skip optimizer steps whose gradients are not finite, stop after too many in a row, never save NaN weights."""

import logging

import torch

from adadpo.training.agreement import any_process


logger = logging.getLogger(__name__)


class NonFiniteStepsError(RuntimeError):
    pass


class NonFiniteGuard:
    """Wraps `optimizer.step`: a step whose gradients hold NaN/inf (on any process) is skipped, not applied.

    A skipped step zeroes the gradients and leaves weights and optimizer moments untouched; the learning-rate
    schedule still advances (the step is counted, like a step with no data). Under DeepSpeed the engine steps inside
    `backward`, so this guard cannot intercept it; DeepSpeed's own overflow handling applies there.
    """

    def __init__(self, max_consecutive: int):
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.total_skipped = 0

    @staticmethod
    def _grads_finite(optimizer) -> bool:
        finite = torch.ones((), dtype=torch.bool)
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    finite &= torch.isfinite(param.grad).all().cpu()
        return not any_process(not bool(finite))  # FSDP shards differ per rank: all must agree

    def wrap(self, optimizer, accelerator=None) -> None:
        if accelerator is not None and accelerator.distributed_type == "DEEPSPEED":
            return
        original_step = optimizer.step

        def guarded_step(*args, **kwargs):
            if self._grads_finite(optimizer):
                self.consecutive = 0
                return original_step(*args, **kwargs)
            self.consecutive += 1
            self.total_skipped += 1
            optimizer.zero_grad(set_to_none=True)
            logger.warning(
                "Non-finite gradient: optimizer step skipped (%d in a row, %d in total).",
                self.consecutive,
                self.total_skipped,
            )
            if self.consecutive >= self.max_consecutive:
                raise NonFiniteStepsError(
                    f"{self.consecutive} optimizer steps in a row had non-finite gradients (`max_nonfinite_steps` = "
                    f"{self.max_consecutive}). Lower `learning_rate`, check the data for extreme lengths, or use "
                    "bf16/fp32 instead of fp16. The last checkpoint on disk has finite weights."
                )
            return None

        optimizer.step = guarded_step

    @staticmethod
    def check_weights_finite(model) -> None:
        for name, param in model.named_parameters():
            if param.numel() and not torch.isfinite(param.detach()).all():
                raise NonFiniteStepsError(f"Refusing to save a checkpoint: parameter {name} holds NaN/inf values.")
