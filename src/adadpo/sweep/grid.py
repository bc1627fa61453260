"""Hyperparameter grids over a recipe: validate the grid, name the cells, resolve each cell's recipe. Reading the
grid from the command line or a file is `adadpo.sweep.parse`; planning, launching and running the cells is
`adadpo.sweep.runs`; collecting their metrics `adadpo.sweep.results`.

A cell's recipe = base recipe + `--set` overrides + the cell's grid values + `output_dir: <sweep_dir>/<cell>`, and,
so that every cell reuses one reference pass, `precompute_ref_log_probs: true` with a shared `ref_logps_cache_dir`.
"""

import dataclasses
import itertools
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adadpo.losses import get_loss_spec
from adadpo.recipe import TRANSLATED_KEYS, config_fields, unknown_key_message
from adadpo.run_folder import SweepFolder
from adadpo.user_numbers import to_number


# Keys the sweep itself sets in every cell recipe; a grid or `--set` naming them would fight the sweep.
SWEEP_KEYS = ("output_dir", "run_name")
REF_CACHE_KEYS = ("precompute_ref_log_probs", "ref_logps_cache_dir")
# Short names so cell folders stay readable (`lr-5e-07_beta-0.01_loss-adadpo`); other keys keep their own name.
KEY_ALIASES = {
    "learning_rate": "lr",
    "loss_type": "loss",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "bs",
    "global_batch_size": "gbs",
    "gradient_accumulation_steps": "ga",
    "adadpo_clip": "clip",
}


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its folder name and the grid values it sets, in grid-key order."""

    name: str
    overrides: dict[str, Any]


def _field_kinds(field_type: Any) -> set[type]:
    """The non-None types a field annotation allows (`float | None` -> {float})."""
    if typing.get_origin(field_type) in (typing.Union, types.UnionType):
        return {arg for arg in typing.get_args(field_type) if arg is not type(None)}
    return {field_type}


def normalize_value(key: str, value: Any, field: dataclasses.Field) -> Any:
    """Numbers for numeric fields: YAML text like `5e-7` becomes 5e-07; text that is no number is an error."""
    kinds = _field_kinds(field.type)
    if value is None or not kinds or not kinds <= {int, float, bool}:
        return value
    if kinds == {bool}:
        if not isinstance(value, bool):
            raise ValueError(f"`{key}` must be true or false, got {value!r}.")
        return value
    number = to_number(key, value)  # YAML text like `5e-7` is a number here; other text is refused
    return number if float in kinds or not isinstance(value, str) else int(number)


def validate_and_normalize(
    recipe: dict[str, Any], grid: dict[str, list[Any]], overrides: dict[str, Any], shared_ref_cache: bool
) -> tuple[dict[str, Any], dict[str, list[Any]], dict[str, Any]]:
    """Check every key against the config dataclasses and every value against its field type; collect all
    problems into one error so a user fixes them in one go. Returns normalized copies (numbers as numbers)."""
    fields = config_fields()
    managed = SWEEP_KEYS + (REF_CACHE_KEYS if shared_ref_cache else ())
    problems = []
    if not grid:
        problems.append("the grid is empty: give `--grid key=v1,v2 ...` or `--grid_file grid.yaml`")
    for source, keys in (("recipe", recipe), ("--set", overrides), ("grid", grid)):
        for key in keys:
            if key not in fields and key not in TRANSLATED_KEYS and not (source == "recipe" and key == "env"):
                problems.append(f"{source}: {unknown_key_message(key)}")
            elif source != "recipe" and key in managed:
                hint = " (pass --no_shared_ref_cache to manage it yourself)" if key in REF_CACHE_KEYS else ""
                problems.append(f"{source}: `{key}` is set by the sweep for every cell{hint}")
    for key in set(grid) & set(overrides):
        problems.append(f"`{key}` is both a grid axis and a --set override; keep one")
    problems += [f"grid: `{key}` has no values" for key, values in grid.items() if not values]
    if problems:
        raise ValueError("Invalid sweep:\n  - " + "\n  - ".join(problems))

    def normalize(key, value):
        return normalize_value(key, value, fields[key]) if key in fields else value

    try:
        recipe = {key: normalize(key, value) for key, value in recipe.items()}
        overrides = {key: normalize(key, value) for key, value in overrides.items()}
        grid = {key: [normalize(key, value) for value in values] for key, values in grid.items()}
    except ValueError as err:
        raise ValueError(f"Invalid sweep: {err}") from None
    for key, values in grid.items():  # after normalizing, so `5e-7` and `5.0e-7` count as the same value
        if len({repr(v) for v in values}) != len(values):
            raise ValueError(f"Invalid sweep: grid `{key}` lists a value twice: {values}.")
    merged = {**recipe, **overrides}
    if merged.get("push_to_hub") and merged.get("hub_model_id") and "hub_model_id" not in grid:
        raise ValueError(
            f"Invalid sweep: every cell would push to the same hub_model_id {merged['hub_model_id']!r}. Use "
            "`--set push_to_hub=false` (push the best cell afterwards), or drop hub_model_id so each cell pushes to "
            "a repo named after its output folder."
        )
    for loss in [overrides.get("loss_type", recipe.get("loss_type")), *grid.get("loss_type", [])]:
        if isinstance(loss, str):
            try:
                get_loss_spec(loss)
            except ValueError as err:
                raise ValueError(f"Invalid sweep: {err}") from None
    return recipe, grid, overrides


def format_value(value: Any) -> str:
    """A value as it appears in a cell name: `5e-07`, `0.01`, `dpo`, `true`."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return format(value, "g")
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-") or "empty"


def cell_name(overrides: dict[str, Any]) -> str:
    """`{"learning_rate": 5e-7, "loss_type": "dpo"}` -> `lr-5e-07_loss-dpo`: stable whatever else the grid holds,
    so extending a grid keeps the finished cells' folders."""
    return "_".join(f"{KEY_ALIASES.get(key, key)}-{format_value(value)}" for key, value in overrides.items())


def expand_grid(grid: dict[str, list[Any]]) -> list[Cell]:
    """The cartesian product, first key outermost; errors if two cells would share a folder."""
    keys = list(grid)
    cells = [
        Cell(cell_name(dict(zip(keys, combo))), dict(zip(keys, combo))) for combo in itertools.product(*grid.values())
    ]
    names = [cell.name for cell in cells]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ValueError(
            f"Grid values that differ only in characters a folder name cannot hold give the same cell: {clashes}."
        )
    return cells


def resolve_cell_recipe(
    base: dict[str, Any], overrides: dict[str, Any], cell: Cell, sweep_dir: Path, shared_ref_cache: bool = True
) -> dict[str, Any]:
    """Base recipe, then `--set` overrides, then the cell's grid values, then the keys the sweep owns."""
    sweep_dir = Path(sweep_dir).resolve()
    recipe = {**base, **overrides, **cell.overrides}
    recipe["output_dir"] = str(sweep_dir / cell.name)
    recipe["run_name"] = f"{sweep_dir.name}-{cell.name}"
    if shared_ref_cache:
        # Every cell sees the same reference model and data, so its log-probs are computed once for the whole grid.
        recipe["precompute_ref_log_probs"] = True
        recipe["ref_logps_cache_dir"] = str(SweepFolder(sweep_dir).ref_cache)
    return recipe


def dump_recipe(recipe: dict[str, Any]) -> str:
    """YAML that reads back to the same values: PyYAML writes 5e-7 as `5.0e-07`, which YAML 1.1 reads as a float."""
    return yaml.safe_dump(recipe, sort_keys=False, default_flow_style=False)
