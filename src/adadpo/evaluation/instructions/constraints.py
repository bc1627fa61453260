"""Constraint registry: each type names its verifier, its parameters and the sentence that asks for it.

A constraint is a plain dict, e.g. `{"type": "word_count_max", "max_words": 50}`, so prompt sets are JSON.
Scoring a response against a prompt's constraints gives the fraction met:

    score(response) = (1 / K) * sum_k verify_k(response)      for the prompt's K constraints.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adadpo.evaluation.instructions import verifiers


@dataclass(frozen=True)
class ConstraintType:
    name: str
    verify: Callable[..., bool]
    params: dict[str, type]  # parameter name -> expected type (list means a non-empty list of strings)
    describe: Callable[..., str]  # params -> the instruction sentence appended to the task


def _quoted(words: list[str]) -> str:
    return ("the words " if len(words) > 1 else "the word ") + ", ".join(f'"{w}"' for w in words)


_TYPES = [
    ConstraintType(
        "word_count_min",
        verifiers.word_count_min,
        {"min_words": int},
        lambda min_words: f"Use at least {min_words} words.",
    ),
    ConstraintType(
        "word_count_max",
        verifiers.word_count_max,
        {"max_words": int},
        lambda max_words: f"Use at most {max_words} words.",
    ),
    ConstraintType(
        "sentence_count_max",
        verifiers.sentence_count_max,
        {"max_sentences": int},
        lambda max_sentences: f"Answer in at most {max_sentences} sentence{'s' if max_sentences > 1 else ''}.",
    ),
    ConstraintType(
        "paragraph_count",
        verifiers.paragraph_count,
        {"num_paragraphs": int},
        lambda num_paragraphs: f"Write exactly {num_paragraphs} paragraphs, separated by a blank line.",
    ),
    ConstraintType(
        "required_words",
        verifiers.required_words,
        {"words": list},
        lambda words: f"Include {_quoted(words)}.",
    ),
    ConstraintType(
        "forbidden_words",
        verifiers.forbidden_words,
        {"words": list},
        lambda words: f"Do not use {_quoted(words)}.",
    ),
    ConstraintType(
        "keyword_frequency",
        verifiers.keyword_frequency,
        {"word": str, "min_count": int},
        lambda word, min_count: f'Use the word "{word}" at least {min_count} times.',
    ),
    ConstraintType(
        "all_lowercase", verifiers.all_lowercase, {}, lambda: "Write your whole answer in lowercase letters only."
    ),
    ConstraintType(
        "all_uppercase", verifiers.all_uppercase, {}, lambda: "Write your whole answer in capital letters only."
    ),
    ConstraintType(
        "bullet_count",
        verifiers.bullet_count,
        {"num_bullets": int},
        lambda num_bullets: f"Answer with exactly {num_bullets} bullet points, each line starting with '* '.",
    ),
    ConstraintType(
        "json_output", verifiers.json_output, {}, lambda: "Format your entire answer as a single JSON object."
    ),
    ConstraintType(
        "ends_with",
        verifiers.ends_with,
        {"phrase": str},
        lambda phrase: f'End your answer with the exact phrase "{phrase}" and nothing after it.',
    ),
    ConstraintType(
        "starts_with", verifiers.starts_with, {"phrase": str}, lambda phrase: f'Start your answer with "{phrase}".'
    ),
    ConstraintType(
        "title",
        verifiers.title,
        {},
        lambda: "Give your answer a title wrapped in double angle brackets, like <<title>>.",
    ),
    ConstraintType("no_commas", verifiers.no_commas, {}, lambda: "Do not use any commas."),
    ConstraintType(
        "postscript",
        verifiers.postscript,
        {"marker": str},
        lambda marker: f"End with a postscript on its own line starting with {marker}",
    ),
    ConstraintType(
        "wrapped_in_quotes",
        verifiers.wrapped_in_quotes,
        {},
        lambda: "Wrap your entire answer in double quotation marks.",
    ),
]
CONSTRAINT_TYPES: dict[str, ConstraintType] = {t.name: t for t in _TYPES}


def validate_constraint(constraint: dict[str, Any]) -> None:
    """Raise a ValueError that says what is wrong with a constraint dict (unknown type, missing/bad parameters)."""
    if not isinstance(constraint, dict) or "type" not in constraint:
        raise ValueError(f"A constraint must be a dict with a 'type' key, got {constraint!r}.")
    kind = CONSTRAINT_TYPES.get(constraint["type"])
    if kind is None:
        raise ValueError(f"Unknown constraint type {constraint['type']!r}. Known types: {sorted(CONSTRAINT_TYPES)}.")
    given = set(constraint) - {"type"}
    if given != set(kind.params):
        raise ValueError(
            f"Constraint {kind.name!r} takes parameters {sorted(kind.params)}, got {sorted(given)} in {constraint!r}."
        )
    for name, expected in kind.params.items():
        value = constraint[name]
        if expected is list:
            ok = isinstance(value, list) and value and all(isinstance(w, str) and w.strip() for w in value)
        elif expected is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        else:
            ok = isinstance(value, str) and bool(value.strip())
        if not ok:
            wanted = {list: "a non-empty list of words", int: "an integer >= 1", str: "a non-empty string"}[expected]
            raise ValueError(f"Constraint {kind.name!r}: `{name}` must be {wanted}, got {value!r}.")


def _params(constraint: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in constraint.items() if k != "type"}


def describe_constraint(constraint: dict[str, Any]) -> str:
    validate_constraint(constraint)
    return CONSTRAINT_TYPES[constraint["type"]].describe(**_params(constraint))


def check_constraint(constraint: dict[str, Any], response: str) -> bool:
    """True when `response` meets `constraint`."""
    validate_constraint(constraint)
    return bool(CONSTRAINT_TYPES[constraint["type"]].verify(response, **_params(constraint)))


def check_constraints(constraints: list[dict[str, Any]], response: str) -> list[bool]:
    return [check_constraint(c, response) for c in constraints]


def score_response(constraints: list[dict[str, Any]], response: str) -> float:
    """Fraction of the constraints met, in [0, 1]. A prompt without constraints is an error, not a free 1.0."""
    if not constraints:
        raise ValueError("score_response needs at least one constraint; this prompt has none.")
    met = check_constraints(constraints, response)
    return sum(met) / len(met)
