"""A sweep's plan on disk (cell recipes + `sweep.json`), its launch commands (local or a slurm array), and the loop
that runs the cells one after another, skipping finished ones and recording failures in `sweep_state.json`."""

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adadpo.files import write_json_atomic, write_text_atomic
from adadpo.run_folder import ALL_RESULTS, RunFolder, SweepFolder
from adadpo.sweep.grid import (
    Cell,
    dump_recipe,
    expand_grid,
    resolve_cell_recipe,
    validate_and_normalize,
)
from adadpo.sweep.parse import load_yaml_mapping


# Runs one command, streaming its output to the console and to the log file; returns the exit code.
Runner = Callable[[list[str], Path], int]


@dataclass
class SweepPlan:
    """Everything a sweep writes and runs, built (and validated) before anything touches the disk."""

    sweep_dir: Path
    grid: dict[str, list[Any]]
    cells: list[Cell]
    recipes: dict[str, dict[str, Any]]  # cell name -> resolved recipe

    @property
    def folder(self) -> SweepFolder:
        return SweepFolder(self.sweep_dir)

    def recipe_path(self, cell: Cell) -> Path:
        return self.folder.recipe(cell.name)

    def output_dir(self, cell: Cell) -> Path:
        return Path(self.recipes[cell.name]["output_dir"])


def is_finished(output_dir: Path) -> bool:
    return RunFolder(output_dir).is_finished()


def plan_sweep(
    recipe_path: str | Path,
    grid: dict[str, list[Any]],
    overrides: dict[str, Any],
    sweep_dir: str | Path,
    shared_ref_cache: bool = True,
) -> SweepPlan:
    """Validate recipe, grid and overrides and resolve every cell's recipe. Raises ValueError on bad input and writes
    nothing. A finished cell whose recipe would now differ is an error: its results would not describe the grid."""
    base = load_yaml_mapping(recipe_path, "Recipe")
    base, grid, overrides = validate_and_normalize(base, grid, overrides, shared_ref_cache)
    sweep_dir = Path(sweep_dir).resolve()
    cells = expand_grid(grid)
    recipes = {cell.name: resolve_cell_recipe(base, overrides, cell, sweep_dir, shared_ref_cache) for cell in cells}
    plan = SweepPlan(sweep_dir, grid, cells, recipes)
    for cell in cells:
        old_path, new = plan.recipe_path(cell), recipes[cell.name]
        if is_finished(plan.output_dir(cell)) and old_path.is_file():
            old = yaml.safe_load(old_path.read_text()) or {}
            changed = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
            if changed:
                raise ValueError(
                    f"Cell {cell.name} already finished with a different recipe ({', '.join(changed)} changed). "
                    f"Use a new --sweep_dir, or delete {plan.output_dir(cell)} to re-run that cell."
                )
    return plan


def write_plan(plan: SweepPlan) -> None:
    """The cell recipes, the logs folder, and `sweep.json` (so `--collect` later needs only the sweep folder)."""
    for cell in plan.cells:
        write_text_atomic(plan.recipe_path(cell), dump_recipe(plan.recipes[cell.name]))
    plan.folder.logs.mkdir(parents=True, exist_ok=True)
    manifest = {"grid": plan.grid, "cells": [{"name": c.name, "overrides": c.overrides} for c in plan.cells]}
    write_json_atomic(plan.folder.manifest, manifest)


def load_plan(sweep_dir: str | Path) -> SweepPlan:
    """The plan an earlier `sweep.py` call wrote into `sweep_dir`."""
    sweep_dir = Path(sweep_dir).resolve()
    manifest_path = SweepFolder(sweep_dir).manifest
    if not manifest_path.is_file():
        raise ValueError(
            f"{sweep_dir} holds no {manifest_path.name}: run scripts/sweep.py with --recipe and a grid first."
        )
    manifest = json.loads(manifest_path.read_text())
    cells = [Cell(c["name"], c["overrides"]) for c in manifest["cells"]]
    plan = SweepPlan(sweep_dir, manifest["grid"], cells, {})
    plan.recipes = {c.name: load_yaml_mapping(plan.recipe_path(c), "Cell recipe") for c in cells}
    return plan


def default_accelerate() -> str:
    """The `accelerate` next to this Python (a venv's bin/ need not be on PATH), else the one on PATH."""
    sibling = Path(sys.executable).parent / "accelerate"
    return str(sibling) if sibling.is_file() else "accelerate"


def build_launch_command(
    recipe_path: Path | str, script: Path | str, accelerate_config: str | None = None, accelerate: str = "accelerate"
) -> list[str]:
    """`accelerate launch [--config_file CFG] scripts/run_adadpo.py --config <cell recipe>`."""
    command = [accelerate, "launch"]
    if accelerate_config:
        command += ["--config_file", str(accelerate_config)]
    return command + [str(script), "--config", str(recipe_path)]


def slurm_array_script(plan: SweepPlan, command_template: list[str], gpus: int = 8, max_parallel: int | None = None):
    """A `sbatch` script with one array task per cell; the `{recipe}` item of the template becomes the task's cell
    recipe. Finished cells exit at once, so resubmitting the array resumes the sweep."""
    sweep, folder = plan.sweep_dir, plan.folder
    limit = f"%{max_parallel}" if max_parallel else ""
    names = " ".join(shlex.quote(cell.name) for cell in plan.cells)
    command = " ".join('"$RECIPE"' if part == "{recipe}" else shlex.quote(part) for part in command_template)
    return f"""#!/bin/bash
#SBATCH --job-name={shlex.quote(sweep.name)}
#SBATCH --array=0-{len(plan.cells) - 1}{limit}
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:{gpus}
#SBATCH --output={folder.logs}/%x-%A_%a.out
# Written by scripts/sweep.py. Add your cluster's partition/account/time lines above and activate the project's
# environment below, then: sbatch {shlex.quote(str(folder.slurm_script))}
# When the array is done: python scripts/sweep.py --sweep_dir {shlex.quote(str(sweep))} --collect
set -euo pipefail
cd {shlex.quote(os.getcwd())}
CELLS=({names})
CELL="${{CELLS[$SLURM_ARRAY_TASK_ID]}}"
RECIPE={shlex.quote(str(folder.recipes))}/"$CELL".yaml
if [ -f {shlex.quote(str(sweep))}/"$CELL"/{ALL_RESULTS} ]; then
    echo "cell $CELL: already finished, skipping"
    exit 0
fi
{command}
"""


def run_streaming(command: list[str], log_path: Path) -> int:
    """Run `command`, copying its output (progress bars included) to the console and to `log_path` as it comes."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (
        open(log_path, "wb") as log,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) as proc,
    ):
        # Read chunks, not lines: tqdm redraws with '\r', which a line reader would hold back until the bar ends.
        console = getattr(sys.stdout, "buffer", None)  # a text-only stdout (some notebooks) gets decoded text
        while chunk := os.read(proc.stdout.fileno(), 65536):
            console.write(chunk) if console else sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
            log.write(chunk)
        return proc.wait()


def load_state(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    path = SweepFolder(sweep_dir).state
    return json.loads(path.read_text()) if path.is_file() else {}


def run_cells(
    plan: SweepPlan, commands: dict[str, list[str]], runner: Runner = run_streaming, echo: Callable = print
) -> dict[str, dict[str, Any]]:
    """Run the cells one after another. A finished cell is skipped; a failed one is recorded (status, return code)
    and the sweep goes on. Returns and saves the per-cell state: {cell: {status, returncode, wall_time_s}}."""
    state = load_state(plan.sweep_dir)
    total = len(plan.cells)
    for index, cell in enumerate(plan.cells, 1):
        prefix = f"cell {index}/{total} {cell.name}"
        output_dir = plan.output_dir(cell)
        if is_finished(output_dir):
            echo(f"{prefix}: skipped, already finished ({RunFolder(output_dir).all_results} exists)", flush=True)
            state.setdefault(cell.name, {})["status"] = "finished"
            continue
        log_path = plan.folder.log(cell.name)
        echo(f"{prefix}: running\n  $ {shlex.join(commands[cell.name])}\n  log: {log_path}", flush=True)
        start = time.monotonic()
        returncode = runner(commands[cell.name], log_path)
        wall_time = round(time.monotonic() - start, 2)
        status = "finished" if returncode == 0 and is_finished(output_dir) else "failed"
        state[cell.name] = {"status": status, "returncode": returncode, "wall_time_s": wall_time}
        write_json_atomic(plan.folder.state, state)
        if status == "finished":
            echo(f"{prefix}: finished in {wall_time:.1f} s", flush=True)
        else:
            why = f"exit code {returncode}" if returncode else f"exit code 0 but no {ALL_RESULTS} was written"
            echo(f"{prefix}: FAILED ({why}) after {wall_time:.1f} s; see {log_path}", flush=True)
    return state
