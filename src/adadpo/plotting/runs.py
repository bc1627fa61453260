"""Paper-style figures from training runs (AdaDPO paper, Chen et al. 2026, arXiv:2605.28440):

- Figure 2: training dynamics, four panels over steps: loss, reward accuracy, beta*KL margin
  beta*[(log pi_w - log ref_w) - (log pi_l - log ref_l)], reward margin; one line per run, line style by loss,
  colour by beta.
- Figure 3 (in `adadpo.plotting.grid`): a final metric against log10(beta) per loss, plus the AdaDPO - DPO
  difference at matching (beta, lr).
- The gradient-balance ratio |dL/dP_w| / |dL/dP_l| over steps: AdaDPO holds it at 1, DPO's drifts below 1.

Every function returns a `matplotlib.figure.Figure` (no pyplot state, so it works headless and in tests);
`save_figure` writes the PNG.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from adadpo.run_folder import RunFolder, SweepFolder


# (metric logged by the trainer, panel title); the eval version is `eval_` + metric.
DYNAMICS_PANELS = (
    ("loss", "Loss"),
    ("rewards/accuracies", "Reward accuracy"),
    ("kl/beta_margin", "β × KL margin"),
    ("rewards/margins", "Reward margin"),
)
GRAD_BALANCE_KEYS = (
    "adadpo/token_grad_balance_mean",  # per token, in P/P_ref space: what Stable AdaDPO sets to 1
    "adadpo/token_grad_balance_median",
    "adadpo/log10_grad_balance_mean",  # per sequence, in P space, as log10 (dominated by a pair's length difference)
    "adadpo/log10_grad_balance_median",
)
BALANCE_TITLES = {
    "token_grad_balance": "per token, |∂L/∂q_w| / |∂L/∂q_l|",
    "log10_grad_balance": "per sequence, log10 |∂L/∂P_w| / |∂L/∂P_l|",
}
# AdaDPO solid, DPO dashed as in the paper; other losses get the remaining styles in order of appearance.
LOSS_LINESTYLES = {"adadpo": "-", "dpo": "--"}
OTHER_LINESTYLES = (":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)))


@dataclass
class Run:
    """A training run folder: what identifies it in a plot, and its `trainer_state.json` log history."""

    path: Path
    loss_type: str
    beta: float
    learning_rate: float
    log_history: list[dict[str, Any]]

    @property
    def label(self) -> str:
        return f"{self.loss_type} β={self.beta:g} lr={self.learning_rate:g}"


def _run_recipe(run_dir: Path) -> dict[str, Any]:
    """The cell recipe `scripts/sweep.py` wrote, else the full recipe `run_adadpo.py` saved in the run folder."""
    cell_recipe, saved = SweepFolder(run_dir.parent).recipe(run_dir.name), RunFolder(run_dir).resolved_config
    for path in (cell_recipe, saved):
        if path.is_file():
            return yaml.safe_load(path.read_text()) or {}
    raise ValueError(
        f"{run_dir} has no recipe to read loss_type/beta/learning_rate from: expected {saved} (saved by "
        f"run_adadpo.py) or {cell_recipe} (written by sweep.py)."
    )


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    state_path = RunFolder(run_dir).trainer_state
    if not state_path.is_file():
        raise ValueError(
            f"{run_dir} has no {state_path.name}: pass a training output_dir (run_adadpo.py writes it when it "
            "saves the model; a run that has not saved yet has none)."
        )
    recipe = _run_recipe(run_dir)

    def value(key):
        if key in recipe:
            return recipe[key]
        from adadpo.recipe import config_fields  # lazily: importing the configs imports trl (seconds), rarely needed

        return config_fields()[key].default

    history = json.loads(state_path.read_text()).get("log_history", [])
    return Run(run_dir, str(value("loss_type")), float(value("beta")), float(value("learning_rate")), history)


def series(run: Run, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of every finite logged value of `key`."""
    points = [(e["step"], e[key]) for e in run.log_history if isinstance(e.get(key), int | float)]
    points = [(step, value) for step, value in points if math.isfinite(value)]
    return [p[0] for p in points], [p[1] for p in points]


def loss_linestyles(losses: list[str]) -> dict[str, Any]:
    others = iter(OTHER_LINESTYLES * (len(losses) // len(OTHER_LINESTYLES) + 1))
    return {loss: LOSS_LINESTYLES.get(loss) or next(others) for loss in dict.fromkeys(losses)}


def value_colors(values: list[float], cmap: str = "viridis") -> dict[float, Any]:
    """One colour per distinct value, spaced on a log scale (betas and learning rates span decades)."""
    distinct = sorted(set(values))
    if len(distinct) == 1:
        return {distinct[0]: colormaps[cmap](0.0)}
    norm = LogNorm(distinct[0], distinct[-1]) if distinct[0] > 0 else None
    positions = norm(distinct) if norm else [i / (len(distinct) - 1) for i in range(len(distinct))]
    return {value: colormaps[cmap](0.85 * float(pos)) for value, pos in zip(distinct, positions)}


def run_styles(runs: list[Run]) -> tuple[list[dict[str, Any]], str]:
    """matplotlib line kwargs per run and a caption of the encoding: line style by loss, colour by beta (by learning
    rate when only that varies), and marker by learning rate when both vary; labels are unique."""
    linestyles = loss_linestyles([run.loss_type for run in runs])
    betas, rates = sorted({run.beta for run in runs}), sorted({run.learning_rate for run in runs})
    by_beta = len(betas) > 1 or len(rates) == 1
    colors = value_colors([run.beta if by_beta else run.learning_rate for run in runs])
    markers = dict(zip(rates, "osD^vP*X")) if by_beta and len(rates) > 1 else {}
    labels = [run.label for run in runs]
    styles = []
    for run, label in zip(runs, labels):
        style = {
            "linestyle": linestyles[run.loss_type],
            "color": colors[run.beta if by_beta else run.learning_rate],
            "label": f"{label} ({run.path.name})" if labels.count(label) > 1 else label,
            "linewidth": 1.8,
        }
        if markers:
            style.update(marker=markers.get(run.learning_rate, "x"), markevery=0.1, markersize=5)
        styles.append(style)
    caption = "line style = loss, colour = " + ("β" if by_beta else "learning rate")
    return styles, caption + (", marker = learning rate" if markers else "")


def choose_metric(runs: list[Run], key: str) -> tuple[str, str]:
    """The eval metric when every run that logs `key` at all also logs `eval_<key>`; else the train metric.
    Returns (logged key, note for the panel title)."""
    logging = [run for run in runs if series(run, key)[0] or series(run, f"eval_{key}")[0]]
    if not logging:
        return f"eval_{key}", "not logged by any run"
    if all(series(run, f"eval_{key}")[0] for run in logging):
        return f"eval_{key}", "eval"
    missing = (
        "no eval metric logged"
        if not any(series(r, f"eval_{key}")[0] for r in logging)
        else "eval missing in some runs"
    )
    return key, f"train; {missing}"


def plot_training_dynamics(runs: list[Run]) -> Figure:
    """Figure 2 of the paper: a 2x2 grid (loss, reward accuracy, beta*KL margin, reward margin) over steps."""
    fig = Figure(figsize=(12, 8.5), layout="constrained")
    styles, caption = run_styles(runs)
    for ax, (key, title) in zip(fig.subplots(2, 2).ravel(), DYNAMICS_PANELS):
        metric, note = choose_metric(runs, key)
        for run, style in zip(runs, styles):
            steps, values = series(run, metric)
            if steps:
                few_points = {"marker": "o", "markersize": 3} if len(steps) < 8 else {}
                ax.plot(steps, values, **{**few_points, **style})
        if not ax.lines:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set(title=f"{title} ({note})", xlabel="training step", ylabel=metric)
        ax.grid(alpha=0.3)
    _legend_below(fig, runs, styles)
    fig.suptitle(f"Training dynamics (cf. AdaDPO paper, Figure 2): {caption}", fontsize=13)
    return fig


def plot_grad_balance(runs: list[Run], keys: tuple[str, ...] = GRAD_BALANCE_KEYS) -> Figure:
    """The gradient balance per step, one panel per summary over pairs that any run logged: the per-token ratio on a
    log axis with 1 (balanced) marked, the per-sequence log10 ratio on a linear axis with 0 (balanced) marked."""
    keys = [key for key in keys if any(_plottable(key, v) for run in runs for v in series(run, key)[1])]
    if not keys:
        raise ValueError(f"No run logged {' or '.join(f'`{k}`' for k in GRAD_BALANCE_KEYS)}; nothing to plot.")
    fig = Figure(figsize=(8 * len(keys), 5.5), layout="constrained")
    styles, caption = run_styles(runs)
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys):
        for run, style in zip(runs, styles):
            points = [(s, v) for s, v in zip(*series(run, key)) if _plottable(key, v)]
            if points:
                few_points = {"marker": "o", "markersize": 3} if len(points) < 8 else {}  # one step draws no line
                ax.plot([p[0] for p in points], [p[1] for p in points], **{**few_points, **style})
        if _is_log10(key):
            ax.axhline(0.0, color="black", linestyle=":", linewidth=1.2, label="balanced (log10 ratio = 0)")
        else:
            ax.axhline(1.0, color="black", linestyle=":", linewidth=1.2, label="balanced (ratio = 1)")
            ax.set_yscale("log")
        name, summary = key.removeprefix("adadpo/").rsplit("_", 1)
        ax.set(title=f"{BALANCE_TITLES[name]}: {summary} over pairs", xlabel="training step", ylabel=key)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"Gradient-balance ratio, 1 = balanced ({caption})", fontsize=13)
    return fig


def _is_log10(key: str) -> bool:
    return "log10_" in key


def _plottable(key: str, value: float) -> bool:
    return math.isfinite(value) and (_is_log10(key) or value > 0)  # a log axis cannot show a ratio <= 0


def _legend_below(fig: Figure, runs: list[Run], styles: list[dict[str, Any]]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], **style) for style in styles]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(runs)), fontsize=9)


def save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path
