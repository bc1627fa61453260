"""Figures over seeds: runs that differ only in their `seed` form one group per (loss, β, learning rate), drawn as
the mean over seeds with a band holding its 95% interval (Student's t over the seeds' values at each step, so three
seeds give a wide band: that is the honest width).

- `plot_seeded_dynamics`: the paper's Figure 2 panels (eval loss, reward accuracy, β×KL margin, reward margin).
- `plot_mechanism`: per β, how far the chosen and the rejected response moved from the reference, per token, on the
  training batches and on the held-out pairs, and the per-token gradient balance |∂L/∂q_w| / |∂L/∂q_l|.
"""

import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from adadpo.plotting.runs import DYNAMICS_PANELS, Run, loss_linestyles, run_styles, series


Group = tuple[str, float, float]  # loss_type, beta, learning_rate
# Held-out panels come from the scheduled evaluations; training-batch panels from every step, smoothed per seed
MECHANISM_SIDES = (
    ("logratio/chosen_per_token", "chosen", "tab:green"),
    ("logratio/rejected_per_token", "rejected", "tab:red"),
)
TOKEN_BALANCE = "adadpo/token_grad_balance_median"
LOSS_COLORS = ("tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:olive", "tab:cyan")


def seed_groups(runs: list[Run]) -> dict[Group, list[Run]]:
    groups: dict[Group, list[Run]] = {}
    for run in runs:
        groups.setdefault((run.loss_type, run.beta, run.learning_rate), []).append(run)
    return groups


def mean_interval(values) -> tuple[float, float, float]:
    """Mean of per-seed values and its 95% Student-t interval (NaN bounds for one seed)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    return mean, mean - half, mean + half


def moving_average(values: list[float], window: int) -> list[float]:
    """The mean of each value and the `window - 1` before it (fewer at the start)."""
    return [float(np.mean(values[max(0, i - window + 1) : i + 1])) for i in range(len(values))]


def seed_band(runs: list[Run], key: str, window: int = 1) -> tuple[list[int], list[tuple[float, float, float]]]:
    """(steps every seed logged `key` at, (mean, low, high) over seeds at each), each seed's series first smoothed
    with a `window`-point moving average."""
    per_seed = []
    for run in runs:
        steps, values = series(run, key)
        per_seed.append(dict(zip(steps, moving_average(values, window))))
    common = sorted(set.intersection(*(set(s) for s in per_seed))) if per_seed else []
    return common, [mean_interval([seed[step] for seed in per_seed]) for step in common]


def _draw_band(ax, steps, band, **style) -> None:
    if not steps:
        return
    mean, low, high = (list(column) for column in zip(*band))
    few_points = {"marker": "o", "markersize": 3} if len(steps) < 8 else {}
    ax.plot(steps, mean, **{**few_points, **style})
    if not any(math.isnan(v) for v in low):
        ax.fill_between(steps, low, high, color=style.get("color"), alpha=0.18, linewidth=0)


def _seed_count(groups: dict[Group, list[Run]]) -> str:
    counts = sorted({len(group) for group in groups.values()})
    return "/".join(map(str, counts))


def plot_seeded_dynamics(runs: list[Run]) -> Figure:
    """Figure 2 over seeds: the four panels on the held-out evaluations, mean and 95% band per (loss, β)."""
    groups = seed_groups(runs)
    firsts = [group[0] for group in groups.values()]
    styles, caption = run_styles(firsts)
    if len({run.beta for run in firsts}) == 1:  # one β: colour by loss too, so that the bands can be told apart
        colors = dict(zip(dict.fromkeys(run.loss_type for run in firsts), LOSS_COLORS))
        styles = [{**style, "color": colors[run.loss_type]} for run, style in zip(firsts, styles)]
        caption = caption.replace("colour = β", "colour = loss")
    fig = Figure(figsize=(12, 8.5), layout="constrained")
    for ax, (key, title) in zip(fig.subplots(2, 2).ravel(), DYNAMICS_PANELS):
        for group, style in zip(groups.values(), styles):
            _draw_band(ax, *seed_band(group, f"eval_{key}"), **{**style, "label": _group_label(group)})
        ax.set(title=f"{title} (held-out)", xlabel="training step", ylabel=f"eval_{key}")
        ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"Training dynamics over {_seed_count(groups)} seeds, mean and 95% interval ({caption})", fontsize=13)
    return fig


def plot_mechanism(runs: list[Run], window: int = 5) -> Figure:
    """Per β (rows): the per-token log-ratio change from the reference of the chosen (green) and rejected (red)
    responses on the training batches as each step sees them, before its update (each seed smoothed over `window`
    steps; within one epoch these are pairs the policy has not trained on yet) and on the held-out pairs, and the
    per-token gradient balance on the training batches (1 = balanced; log axis); line style by loss."""
    groups = seed_groups(runs)
    betas = sorted({beta for _, beta, _ in groups}, reverse=True)
    linestyles = loss_linestyles([loss for loss, _, _ in groups])
    fig = Figure(figsize=(17, 4.6 * len(betas)), layout="constrained")
    axes = fig.subplots(len(betas), 3, squeeze=False)
    for row, beta in zip(axes, betas):
        for (loss, group_beta, _), group in groups.items():
            if group_beta != beta:
                continue
            for key, side, color in MECHANISM_SIDES:
                label = f"{loss} {side}"
                _draw_band(
                    row[0], *seed_band(group, key, window), color=color, linestyle=linestyles[loss], label=label
                )
                _draw_band(
                    row[1], *seed_band(group, f"eval_{key}"), color=color, linestyle=linestyles[loss], label=label
                )
            _draw_band(row[2], *seed_band(group, TOKEN_BALANCE, window), color="black", linestyle=linestyles[loss],
                       label=loss)  # fmt: skip
        for ax, title in zip(row, (f"training batches, before update ({window}-step mean)", "held-out pairs")):
            ax.axhline(0.0, color="gray", linewidth=1)
            ax.set(title=f"β={beta:g}, {title}", xlabel="training step",
                   ylabel="(log π − log π_ref) / tokens")  # fmt: skip
        row[2].axhline(1.0, color="gray", linestyle=":", linewidth=1.2)
        row[2].set_yscale("log")
        row[2].set(title=f"β={beta:g}, per-token gradient balance (batch median)",
                   xlabel="training step", ylabel=TOKEN_BALANCE)  # fmt: skip
        for ax in row:
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
    fig.suptitle(
        f"The mechanism over {_seed_count(groups)} seeds (mean, 95% interval): how far each response moved from the "
        "reference, and the gradient balance",
        fontsize=13,
    )
    return fig


def _group_label(group: list[Run]) -> str:
    return f"{group[0].label} ({len(group)} seeds)"


def last_fraction_means(runs: list[Run], key: str, fraction: float = 0.25) -> list[float]:
    """Per seed, the mean of `key` over the last `fraction` of its logged steps (training-batch metrics are noisy)."""
    means: list[Any] = []
    for run in runs:
        values = series(run, key)[1]
        if not values:
            raise ValueError(f"{run.path} logged no `{key}`.")
        means.append(float(np.mean(values[-max(1, round(len(values) * fraction)) :])))
    return means
