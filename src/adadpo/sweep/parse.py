"""Reading a sweep's grid and fixed overrides: `--grid key=v1,v2` and `--set key=value` tokens, a YAML grid file,
a YAML recipe. Values are read as YAML reads them; `adadpo.sweep.grid.validate_and_normalize` then checks them against
the config classes."""

from pathlib import Path
from typing import Any

import yaml


def parse_value(text: str) -> Any:
    """One token as YAML reads it (`0.01` -> float, `true` -> bool, `dpo` -> str, `[a, b]` -> list).

    YAML 1.1 also reads `no`/`yes`/`on`/`off` as booleans; on the command line those are strategy names
    (`eval_strategy=no`), so only `true`/`false` become booleans.
    """
    value = yaml.safe_load(text) if text.strip() else None
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        return text.strip()
    return value


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, so `lora_target_modules=[q_proj,v_proj],[k_proj]` gives two values."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current]


def _split_key_value(token: str, flag: str) -> tuple[str, str]:
    key, sep, value = token.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ValueError(f"{flag} takes `key=value` tokens, got {token!r} (e.g. `learning_rate=3.0e-7,5.0e-7`).")
    return key.strip(), value.strip()


def parse_grid_tokens(tokens: list[str]) -> dict[str, list[Any]]:
    """`["beta=0.01,0.05", "loss_type=dpo,adadpo"]` -> `{"beta": [0.01, 0.05], "loss_type": ["dpo", "adadpo"]}`."""
    grid: dict[str, list[Any]] = {}
    for token in tokens:
        key, text = _split_key_value(token, "--grid")
        if key in grid:
            raise ValueError(f"--grid names `{key}` twice; list all its values in one token: `{key}=v1,v2`.")
        grid[key] = [parse_value(part) for part in _split_top_level(text)]
    return grid


def parse_set_tokens(tokens: list[str]) -> dict[str, Any]:
    """`["max_steps=2", "beta=0.1"]` -> `{"max_steps": 2, "beta": 0.1}` (one value each, applied to every cell)."""
    pairs = [_split_key_value(token, "--set") for token in tokens]
    return {key: parse_value(text) for key, text in pairs}


def load_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist.")
    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must be a YAML mapping of `key: value` lines, got {type(data).__name__}.")
    return data


def load_grid_file(path: str | Path) -> dict[str, list[Any]]:
    """A YAML mapping `key: [v1, v2, ...]`; a scalar value is a one-value axis."""
    data = load_yaml_mapping(path, "Grid file")
    return {key: value if isinstance(value, list) else [value] for key, value in data.items()}
