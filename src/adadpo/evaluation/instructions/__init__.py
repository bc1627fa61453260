"""Verifiable-instruction prompts: constraint types with verifier functions, the built-in 400-prompt set with a
fixed train/held-out split, prompt loading, and the accuracy / win-rate metrics used by `scripts/evaluate.py`."""

from adadpo.evaluation.instructions.constraints import (
    CONSTRAINT_TYPES,
    ConstraintType,
    check_constraint,
    check_constraints,
    describe_constraint,
    score_response,
    validate_constraint,
)
from adadpo.evaluation.instructions.loading import load_prompts, write_prompts_jsonl
from adadpo.evaluation.instructions.metrics import instruction_accuracy, pairwise_win_rate, win_loss_tie
from adadpo.evaluation.instructions.prompt_set import build_prompt_set, load_instruction_prompts, validate_prompt


__all__ = [
    "CONSTRAINT_TYPES",
    "ConstraintType",
    "build_prompt_set",
    "check_constraint",
    "check_constraints",
    "describe_constraint",
    "instruction_accuracy",
    "load_instruction_prompts",
    "load_prompts",
    "pairwise_win_rate",
    "win_loss_tie",
    "score_response",
    "validate_constraint",
    "validate_prompt",
    "write_prompts_jsonl",
]
