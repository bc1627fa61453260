"""Paper-style PNGs from training runs: training dynamics (Figure 2), the gradient-balance ratio over steps, and,
with --sweep_dir, final metrics against log10(beta) with the AdaDPO - DPO difference (Figure 3).

    python scripts/plot_runs.py --sweep_dir outputs/sweep --out outputs/sweep/plots
    python scripts/plot_runs.py outputs/run-a outputs/run-b --out plots
    python scripts/plot_runs.py --results scores.csv --metric alpaca_eval_lc --out plots  # your own columns
"""

import argparse
import re
import sys
from pathlib import Path

import matplotlib


matplotlib.use("Agg")  # headless: clusters and CI have no display

from adadpo.plotting.grid import load_results, plot_metric_vs_beta  # noqa: E402
from adadpo.plotting.runs import (  # noqa: E402
    GRAD_BALANCE_KEYS,
    load_run,
    plot_grad_balance,
    plot_training_dynamics,
    save_figure,
    series,
)
from adadpo.run_folder import SweepFolder  # noqa: E402


# Figure 3 metrics, in the order tried when --metric is not given (eval metrics exist only with an eval set).
DEFAULT_METRICS = ("eval_rewards/accuracies", "eval_rewards/margins", "eval_kl/beta_margin", "eval_loss", "train_loss")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="*", help="Training output folders (each with trainer_state.json).")
    parser.add_argument("--sweep_dir", help="A scripts/sweep.py folder: plot its finished cells and results.csv.")
    parser.add_argument(
        "--results", help="CSV for Figure 3 (default: <sweep_dir>/results.csv); extra columns welcome."
    )
    parser.add_argument("--out", required=True, help="Folder for the PNGs.")
    parser.add_argument("--metric", nargs="+", help=f"results.csv columns for Figure 3 (default: {DEFAULT_METRICS}).")
    args = parser.parse_args(argv)
    if not (args.run_dirs or args.sweep_dir or args.results):
        parser.error("give run folders, --sweep_dir, --results, or a combination.")
    return args


def main(argv: list[str] | None = None) -> list[Path]:
    """Returns the PNGs written. Every input is read and checked before the first figure is saved."""
    args = parse_args(argv)
    run_dirs = [Path(d) for d in args.run_dirs]
    sweep = SweepFolder(args.sweep_dir) if args.sweep_dir else None
    sweep_rows = load_results(sweep.results_csv) if sweep else []
    for row in sweep_rows:
        cell = sweep.run(str(row["cell"]))
        if row.get("status") == "finished" and cell.trainer_state.is_file():
            run_dirs.append(cell.root)
    runs = [load_run(d) for d in dict.fromkeys(d.resolve() for d in run_dirs)]

    rows = load_results(args.results) if args.results else sweep_rows
    if args.metric and not rows:
        raise ValueError("--metric plots results.csv columns: pass --sweep_dir or --results too.")
    has_values = {m for row in rows for m, v in row.items() if isinstance(v, float)}
    metrics = args.metric or [m for m in DEFAULT_METRICS if m in has_values][:4]
    missing = [m for m in metrics if m not in has_values]
    if missing:
        raise ValueError(f"The results have no numeric values for {missing}; columns: {', '.join(rows[0])}.")
    if rows and not metrics:
        print(f"The results hold none of {DEFAULT_METRICS}: no metric-vs-beta plot (choose columns with --metric).")

    out = Path(args.out)
    figures = []  # built first, saved after: a bad input fails before any PNG is written
    if runs:
        figures.append((plot_training_dynamics(runs), out / "training_dynamics.png"))
        if any(series(run, key)[0] for run in runs for key in GRAD_BALANCE_KEYS):
            figures.append((plot_grad_balance(runs), out / "grad_balance.png"))
        else:
            print(f"No run logged {' or '.join(GRAD_BALANCE_KEYS)}: skipping the gradient-balance plot.")
    for metric in metrics:
        slug = re.sub(r"[^A-Za-z0-9]+", "_", metric).strip("_")
        figures.append((plot_metric_vs_beta(rows, metric), out / f"metric_vs_beta_{slug}.png"))
    written = [save_figure(fig, path) for fig, path in figures]
    for path in written:
        print(f"wrote {path}")
    return written


def cli() -> int:
    try:
        main()
    except ValueError as err:
        sys.exit(f"error: {err}")
    return 0
