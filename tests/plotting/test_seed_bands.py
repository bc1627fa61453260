"""`adadpo.plotting.seeds`: the mean over seeds and its 95% Student-t band, against hand computations."""

import math
from pathlib import Path

import pytest

from adadpo.plotting.runs import Run
from adadpo.plotting.seeds import (
    last_fraction_means,
    mean_interval,
    moving_average,
    plot_mechanism,
    plot_seeded_dynamics,
    seed_band,
)


T_975_2 = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom (printed tables)


def make_run(loss: str, beta: float, seed: int, shift: float) -> Run:
    history = []
    for step in range(1, 7):
        history.append({
            "step": step, "loss": 0.7 - 0.01 * step + shift, "logratio/chosen_per_token": -0.01 * step + shift,
            "logratio/rejected_per_token": -0.03 * step - shift, "adadpo/token_grad_balance_median": 1.0 + shift,
        })  # fmt: skip
        if step % 3 == 0:
            history.append({
                "step": step, "eval_loss": 0.69 - 0.01 * step + shift, "eval_rewards/accuracies": 0.5 + shift,
                "eval_kl/beta_margin": shift, "eval_rewards/margins": 2 * shift,
                "eval_logratio/chosen_per_token": shift, "eval_logratio/rejected_per_token": -shift,
            })  # fmt: skip
    return Run(Path(f"{loss}-beta{beta:g}-seed{seed}"), loss, beta, 1e-4, history)


@pytest.fixture
def runs():
    shifts = (0.0, 0.01, 0.05)
    return [make_run(loss, beta, seed, s) for beta in (0.05, 0.01) for loss in ("dpo", "adadpo")
            for seed, s in enumerate(shifts)]  # fmt: skip


def test_mean_interval_is_students_t_over_seeds():
    mean, low, high = mean_interval([1.0, 2.0, 3.0])  # sd 1
    assert mean == 2.0 and high - mean == pytest.approx(T_975_2 / math.sqrt(3)) and mean - low == high - mean
    assert math.isnan(mean_interval([4.0])[1])  # one seed: no interval


def test_seed_band_smooths_each_seed_then_takes_the_interval(runs):
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    seeds = runs[:3]
    steps, band = seed_band(seeds, "logratio/chosen_per_token", window=2)
    assert steps == list(range(1, 7))
    # step 2, window 2: each seed's mean of steps 1 and 2 is -0.015 + shift
    expected = mean_interval([-0.015 + s for s in (0.0, 0.01, 0.05)])
    assert band[1] == pytest.approx(expected)
    eval_steps, _ = seed_band(seeds, "eval_loss")
    assert eval_steps == [3, 6]
    # last quarter of 6 steps: the last 2 (round(1.5) = 2), per seed
    assert last_fraction_means(seeds, "adadpo/token_grad_balance_median") == pytest.approx([1.0, 1.01, 1.05])


def test_figures_draw_each_groups_mean_with_its_band(runs):
    fig = plot_seeded_dynamics(runs)
    loss_panel = fig.axes[0]
    assert len(loss_panel.lines) == 4 and len(loss_panel.collections) == 4  # a line and a band per (loss, β)
    line = loss_panel.lines[0]
    assert list(line.get_xdata()) == [3, 6]
    assert list(line.get_ydata()) == pytest.approx([0.66 + 0.02, 0.63 + 0.02])  # mean shift 0.02
    band = loss_panel.collections[0].get_paths()[0].vertices[:, 1]
    low, high = mean_interval([0.66 + s for s in (0.0, 0.01, 0.05)])[1:]
    assert band.min() == pytest.approx(min(low, mean_interval([0.63, 0.64, 0.68])[1]))
    assert band.max() == pytest.approx(max(high, mean_interval([0.63, 0.64, 0.68])[2]))

    one_beta = plot_seeded_dynamics([run for run in runs if run.beta == 0.05]).axes[0]
    assert one_beta.lines[0].get_color() != one_beta.lines[1].get_color()  # one β: the losses get their own colours

    mechanism = plot_mechanism(runs, window=1)
    assert len(mechanism.axes) == 6  # two β rows, three panels each
    train, held_out, balance = mechanism.axes[:3]
    assert len(train.lines) == 2 * 2 + 1 and len(held_out.lines) == 2 * 2 + 1  # 2 losses x 2 sides, and the zero line
    rejected = [line for line in train.lines if line.get_label() == "dpo rejected"][0]
    assert list(rejected.get_ydata()) == pytest.approx([-0.03 * step - 0.02 for step in range(1, 7)])
    assert balance.get_yscale() == "log" and len(balance.lines) == 2 + 1
