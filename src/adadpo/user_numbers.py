"""Numbers as users write them, in recipes (YAML), on the command line and in Python calls: the one place that turns
them into numbers or refuses them with the key named and the fix.

YAML 1.1 (PyYAML) reads `5e-7`, without a dot, as the string "5e-7"; a recipe key meant as a number is read as text
that way more often than any other mistake, so text that is a number is accepted where a recipe is read, with the
way to write it as a number.
"""

import math
import numbers
from typing import Any


YAML_HINT = "Write floats with a dot: `5.0e-7` (YAML reads `5e-7` as text)."


def to_number(name: str, value: Any, *, from_text: bool = True, example: str | None = None) -> float:
    """`value` as a number, or a ValueError naming `name` (and `example`, a value to write instead). Booleans are
    never numbers; text is read as a number only with `from_text` (recipes, the command line): a Python caller
    passing a string made a mistake."""
    fix = f" Set e.g. {name}={example}." if example is not None else ""
    if isinstance(value, str) and from_text:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"`{name}` must be a number, got the string {value!r}. {YAML_HINT}{fix}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = f" {YAML_HINT}" if isinstance(value, str) else ""
        raise ValueError(f"`{name}` must be a number, got {value!r} ({type(value).__name__}).{hint}{fix}")
    return value


def check_range(name: str, value: Any, ok, requirement: str, example: str) -> None:
    """`value` is a finite number (not text) with `ok(value)`, or a ValueError saying what is required and an example."""
    number = to_number(name, value, from_text=False, example=example)
    if not math.isfinite(float(number)) or not ok(float(number)):
        requirement = f" {requirement}" if requirement else ""
        raise ValueError(f"`{name}` must be a finite number{requirement}, got {value!r}; set e.g. {name}={example}")
