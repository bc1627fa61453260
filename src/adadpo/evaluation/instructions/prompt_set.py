"""The built-in verifiable-instruction prompt set: 50 tasks x 8 constraint combinations = 400 prompts, built
deterministically in code (no package data to ship). Task i is held out when `i % 5 == 4`, giving 320 train and
80 held-out prompts about disjoint topics.

Each prompt is `{"id", "prompt", "constraints": [{"type", ...params}], "split": "train" | "heldout"}`.
"""

import random
from typing import Any

from adadpo.evaluation.instructions.constraints import CONSTRAINT_TYPES, describe_constraint, validate_constraint
from adadpo.evaluation.instructions.tasks import HELDOUT_EVERY, TASKS


PROMPTS_PER_TASK = 8
SPLITS = ("train", "heldout")

# Pairs of types that cannot (or can hardly) be met together; the builder never combines them.
_CONFLICTS = {
    ("all_lowercase", "all_uppercase"),
    ("word_count_min", "word_count_max"),
    ("word_count_min", "sentence_count_max"),
    ("required_words", "forbidden_words"),
    ("required_words", "keyword_frequency"),
    ("forbidden_words", "keyword_frequency"),
    ("bullet_count", "paragraph_count"),
    ("bullet_count", "sentence_count_max"),
    ("paragraph_count", "sentence_count_max"),
    ("postscript", "ends_with"),
    *(
        ("json_output", other)
        for other in (
            "paragraph_count",
            "bullet_count",
            "title",
            "ends_with",
            "starts_with",
            "postscript",
            "wrapped_in_quotes",
            "no_commas",
            "sentence_count_max",
            "all_uppercase",
        )
    ),
    *(
        ("wrapped_in_quotes", other)
        for other in ("starts_with", "ends_with", "bullet_count", "paragraph_count", "title", "postscript")
    ),
}
_ENDINGS = ["Is there anything else I can help with?", "That is all.", "Thank you for reading.", "Hope this helps!"]
_OPENINGS = ["Sure", "Here is", "In short", "Well"]


def conflicts(type_a: str, type_b: str) -> bool:
    return type_a == type_b or (type_a, type_b) in _CONFLICTS or (type_b, type_a) in _CONFLICTS


def _sample_params(kind: str, keywords: list[str], rng: random.Random) -> dict[str, Any]:
    if kind == "word_count_min":
        return {"min_words": rng.choice([20, 30, 40, 60])}
    if kind == "word_count_max":
        return {"max_words": rng.choice([15, 25, 40, 60])}
    if kind == "sentence_count_max":
        return {"max_sentences": rng.choice([1, 2, 3])}
    if kind == "paragraph_count":
        return {"num_paragraphs": rng.choice([2, 3])}
    if kind in ("required_words", "forbidden_words"):
        return {"words": sorted(rng.sample(keywords, rng.choice([1, 2])))}
    if kind == "keyword_frequency":
        return {"word": rng.choice(keywords), "min_count": rng.choice([2, 3])}
    if kind == "bullet_count":
        return {"num_bullets": rng.choice([2, 3, 4, 5])}
    if kind == "ends_with":
        return {"phrase": rng.choice(_ENDINGS)}
    if kind == "starts_with":
        return {"phrase": rng.choice(_OPENINGS)}
    if kind == "postscript":
        return {"marker": rng.choice(["P.S.", "P.P.S."])}
    return {}


def _pick_types(first: str, k: int, rng: random.Random) -> list[str]:
    chosen = [first]
    others = sorted(CONSTRAINT_TYPES)
    rng.shuffle(others)
    for kind in others:
        if len(chosen) == k:
            break
        if not any(conflicts(kind, c) for c in chosen):
            chosen.append(kind)
    return chosen


def build_prompt_set(seed: int = 0) -> list[dict[str, Any]]:
    """All 400 prompts, in a fixed order. The same seed always gives the same list (the default is the shipped set).

    Every constraint type leads an equal share of prompts (the first type rotates over the registry), and 1-3
    compatible constraints are attached to each prompt.
    """
    rng = random.Random(seed)
    type_names = sorted(CONSTRAINT_TYPES)
    prompts, seen = [], set()
    for task_index, (task, keywords) in enumerate(TASKS):
        split = "heldout" if task_index % HELDOUT_EVERY == HELDOUT_EVERY - 1 else "train"
        for j in range(PROMPTS_PER_TASK):
            first = type_names[(task_index * PROMPTS_PER_TASK + j) % len(type_names)]
            while True:  # resample until this task gets a combination it does not have yet
                kinds = _pick_types(first, rng.choice([1, 1, 2, 2, 3]), rng)
                constraints = [{"type": kind, **_sample_params(kind, keywords, rng)} for kind in kinds]
                key = repr(sorted(map(repr, constraints)))
                if (task, key) not in seen:
                    seen.add((task, key))
                    break
            text = " ".join([task] + [describe_constraint(c) for c in constraints])
            prompts.append(
                {"id": f"if-{len(prompts):04d}", "prompt": text, "constraints": constraints, "split": split}
            )
    return prompts


def load_instruction_prompts(split: str = "train", seed: int = 0) -> list[dict[str, Any]]:
    """The built-in prompts of one split ("train", "heldout") or all of them ("all")."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"Unknown instruction split {split!r}: use 'train', 'heldout' or 'all'.")
    prompts = build_prompt_set(seed)
    return prompts if split == "all" else [p for p in prompts if p["split"] == split]


def validate_prompt(row: dict[str, Any], require_constraints: bool) -> None:
    """Raise a ValueError naming the row when it has no usable `prompt` or (if required) `constraints`."""
    where = f"prompt {row.get('id', '?')!r}"
    if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        raise ValueError(f"{where}: `prompt` must be a non-empty string, got {row.get('prompt')!r}.")
    constraints = row.get("constraints")
    if constraints is None:
        if require_constraints:
            raise ValueError(
                f"{where} has no `constraints`: the verifier scorer needs them. Use the built-in set "
                "(`instructions:train`), add a `constraints` list to each row, or use `scorer: reward_model`."
            )
        return
    if not isinstance(constraints, list) or not constraints:
        raise ValueError(f"{where}: `constraints` must be a non-empty list, got {constraints!r}.")
    for constraint in constraints:
        validate_constraint(constraint)
