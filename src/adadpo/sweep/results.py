"""Collect each cell's final metrics (`<output_dir>/all_results.json`) into `results.csv` (every metric) and
`results.md` (a markdown table of the headline ones). Collection only reads files, so re-running it is always safe."""

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from adadpo.files import write_text_atomic
from adadpo.recipe import config_fields
from adadpo.run_folder import RunFolder
from adadpo.sweep.grid import format_value
from adadpo.sweep.runs import SweepPlan, load_state


# Identify a run in plots and tables even when they are not grid axes.
IDENTITY_KEYS = ("loss_type", "beta", "learning_rate")
STATUS_COLUMNS = ("status", "returncode", "wall_time_s")
# The metrics the markdown table shows when present (the AdaDPO paper's Figure 2 quantities + the final losses).
HEADLINE_METRICS = (
    "train_loss",
    "eval_loss",
    "eval_rewards/accuracies",
    "eval_rewards/margins",
    "eval_kl/beta_margin",
    "eval_adadpo/token_grad_balance_median",
    "train_runtime",
)


def collect_results(plan: SweepPlan) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per cell, in grid order: cell, grid values, loss_type/beta/learning_rate, status, metrics.

    status is `finished` (all_results.json exists), `failed` (the last attempt failed; returncode says how) or
    `pending` (not run yet, or a slurm task still running)."""
    state = load_state(plan.sweep_dir)
    # A recipe that leaves beta/learning_rate/loss_type out trains with the config default: report that value.
    defaults = {key: config_fields()[key].default for key in IDENTITY_KEYS}
    rows, metric_keys = [], set()
    for cell in plan.cells:
        recipe = plan.recipes[cell.name]
        row: dict[str, Any] = {"cell": cell.name, **cell.overrides}
        row.update({key: recipe.get(key, defaults[key]) for key in IDENTITY_KEYS if key not in row})
        cell_state = state.get(cell.name, {})
        results_path = RunFolder(recipe["output_dir"]).all_results
        if results_path.is_file():
            metrics = json.loads(results_path.read_text())
            row.update(status="finished", returncode=0, wall_time_s=cell_state.get("wall_time_s"))
            row.update(metrics)
            metric_keys.update(metrics)
        else:
            status = "failed" if cell_state.get("status") == "failed" else "pending"
            row.update(
                status=status, returncode=cell_state.get("returncode"), wall_time_s=cell_state.get("wall_time_s")
            )
        rows.append(row)
    grid_keys = list(plan.grid)
    identity = [key for key in IDENTITY_KEYS if key not in grid_keys]
    # Train metrics first, then eval metrics, each alphabetical.
    metrics = sorted(metric_keys, key=lambda key: (key.startswith("eval_"), key))
    return rows, ["cell", *grid_keys, *identity, *STATUS_COLUMNS, *metrics]


def results_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def _cell_text(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return format_value(value) if isinstance(value, bool) else str(value)


def results_markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A GitHub markdown table: the identifying columns, status, and the headline metrics that were logged."""
    headline = [key for key in HEADLINE_METRICS if key in columns]
    metrics_start = columns.index(STATUS_COLUMNS[-1]) + 1
    shown = columns[:metrics_start] + (headline or columns[metrics_start:])
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_cell_text(row.get(key)) for key in shown) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(plan: SweepPlan) -> tuple[Path, Path, str]:
    """Write `results.csv` and `results.md` into the sweep folder; returns their paths and the table."""
    rows, columns = collect_results(plan)
    table = results_markdown(rows, columns)
    csv_path, md_path = plan.folder.results_csv, plan.folder.results_md
    write_text_atomic(csv_path, results_csv(rows, columns))
    done = sum(row["status"] == "finished" for row in rows)
    header = f"# Sweep {plan.sweep_dir.name}\n\n{done}/{len(rows)} cells finished. Every metric: `results.csv`.\n\n"
    write_text_atomic(md_path, header + table)
    return csv_path, md_path, table
