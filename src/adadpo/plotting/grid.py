"""Figure 3 of the AdaDPO paper (Chen et al. 2026, arXiv:2605.28440) from a sweep's `results.csv`: a final metric
against log10(beta), one line per (loss, learning rate), and Ada-X minus X at the same (beta, learning rate).
Line styles and colours match `adadpo.plotting.runs`' training-dynamics figures."""

import csv
import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from adadpo.losses import LOSS_SPECS
from adadpo.plotting.runs import loss_linestyles, value_colors


def base_loss(loss: str) -> str | None:
    """The loss an Ada- variant balances (adadpo -> dpo, ada_simpo -> simpo; `LossSpec.base`); None for another
    loss, or a name the registry does not know (a results.csv may hold other methods' rows)."""
    spec = LOSS_SPECS.get(loss)
    return spec.base if spec is not None else None


def load_results(csv_path: str | Path) -> list[dict[str, Any]]:
    """`results.csv` rows with numbers as floats; empty cells dropped."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ValueError(f"{csv_path} does not exist: run `scripts/sweep.py --sweep_dir ... --collect` first.")

    def number(text):
        try:
            return float(text)
        except ValueError:
            return text

    with open(csv_path) as f:
        return [{k: number(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def plot_metric_vs_beta(rows: list[dict[str, Any]], metric: str) -> Figure:
    """Figure 3 of the paper: `metric` against log10(beta), one line per (loss, lr); and Ada-X minus X at the same
    (beta, lr) for every Ada-/base pair present."""
    absent = [key for key in ("loss_type", "learning_rate", "beta") if rows and key not in rows[0]]
    if absent:
        raise ValueError(f"The results need columns loss_type, learning_rate and beta; missing: {absent}.")
    rows = [r for r in rows if isinstance(r.get(metric), float) and isinstance(r.get("beta"), float) and r["beta"] > 0]
    if not rows:
        raise ValueError(f"No finished run in the results has a numeric `{metric}` (and a beta > 0).")
    fig = Figure(figsize=(13, 5), layout="constrained")
    ax_metric, ax_diff = fig.subplots(1, 2)
    linestyles = loss_linestyles([r["loss_type"] for r in rows])
    lr_colors = value_colors([r["learning_rate"] for r in rows], cmap="plasma")
    table = {(r["loss_type"], r["learning_rate"], r["beta"]): r[metric] for r in rows}
    if len(table) < len(rows):
        raise ValueError(
            "Several runs share the same (loss_type, learning_rate, beta), so a grid axis other than these varies; "
            "plot one value of it at a time (filter the rows / results.csv)."
        )
    for loss, lr in sorted({(loss, lr) for loss, lr, _ in table}):
        betas = sorted(b for los, rate, b in table if (los, rate) == (loss, lr))
        xs, ys = [math.log10(b) for b in betas], [table[loss, lr, b] for b in betas]
        ax_metric.plot(xs, ys, marker="o", linestyle=linestyles[loss], color=lr_colors[lr], label=f"{loss} lr={lr:g}")
    for ada, base in sorted({(loss, base_loss(loss)) for loss, _, _ in table if base_loss(loss)}):
        for lr in sorted({rate for los, rate, _ in table if los == ada}):
            betas = sorted(b for los, rate, b in table if (los, rate) == (ada, lr) and (base, lr, b) in table)
            diffs = [table[ada, lr, b] - table[base, lr, b] for b in betas]
            if betas:
                label = f"{ada} − {base} lr={lr:g}"
                ax_diff.plot([math.log10(b) for b in betas], diffs, marker="o", color=lr_colors[lr], label=label)
    ax_diff.axhline(0.0, color="black", linewidth=1)
    if len(ax_diff.lines) == 1:
        note = "needs adadpo and dpo (or ada_X and X)\nat the same (β, learning rate)"
        ax_diff.text(0.5, 0.5, note, ha="center", va="center", transform=ax_diff.transAxes, color="gray")
    ax_metric.set(title=f"{metric} vs log10 β", xlabel="log10 β", ylabel=metric)
    ax_diff.set(title=f"AdaDPO − DPO: difference in {metric}", xlabel="log10 β", ylabel=f"Δ {metric}")
    for ax in (ax_metric, ax_diff):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"Final {metric} across the grid (cf. AdaDPO paper, Figure 3)", fontsize=13)
    return fig
