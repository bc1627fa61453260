"""adadpo.plotting and scripts/plot_runs.py on synthetic trainer_state.json / results.csv: panel counts, line styles
and colours, the eval -> train fallback, the AdaDPO - DPO difference, files written, and clear errors."""

import json
import math

import pytest
import yaml
from matplotlib.colors import to_hex

from adadpo.cli import plot_runs
from adadpo.plotting.grid import plot_metric_vs_beta
from adadpo.plotting.runs import load_run, plot_grad_balance, plot_training_dynamics


def make_history(loss_type, beta, steps=10, eval_every=5, with_eval=True):
    """Train entries every step and eval entries every `eval_every` steps, values from simple formulas."""
    reference_free = loss_type == "simpo"
    history = []
    for step in range(1, steps + 1):
        entry = {"step": step, "loss": 0.7 - 0.01 * step, "rewards/accuracies": 0.5 + 0.02 * step}
        entry.update(
            {
                "rewards/margins": beta * step,
                "adadpo/token_grad_balance_mean": 1.0 if loss_type == "adadpo" else 1 / step,
            }
        )
        if not reference_free:
            entry["kl/beta_margin"] = beta * step / 2
        history.append(entry)
        if with_eval and step % eval_every == 0:
            history.append({"step": step, **{f"eval_{k}": v + 0.1 for k, v in entry.items() if k != "step"}})
    return history


def write_run(run_dir, loss_type, beta, lr=5e-7, recipe_name="adadpo_config.yaml", **history_kwargs):
    run_dir.mkdir(parents=True)
    state = {"log_history": make_history(loss_type, beta, **history_kwargs), "global_step": 10}
    (run_dir / "trainer_state.json").write_text(json.dumps(state))
    recipe = {"loss_type": loss_type, "beta": beta, "learning_rate": lr}
    recipe_path = run_dir / recipe_name if recipe_name else run_dir.parent / "recipes" / f"{run_dir.name}.yaml"
    recipe_path.parent.mkdir(parents=True, exist_ok=True)
    recipe_path.write_text(yaml.safe_dump(recipe))
    return run_dir


@pytest.fixture
def runs(tmp_path):
    specs = [("adadpo", 0.01), ("dpo", 0.01), ("dpo", 0.1), ("simpo", 2.0)]
    return [load_run(write_run(tmp_path / f"{loss}-{beta}", loss, beta)) for loss, beta in specs]


def test_training_dynamics_has_four_panels_styled_by_loss_and_beta(runs):
    fig = plot_training_dynamics(runs)
    assert len(fig.axes) == 4
    loss_ax, acc_ax, kl_ax, margin_ax = fig.axes
    assert loss_ax.get_title() == "Loss (eval)" and loss_ax.get_ylabel() == "eval_loss"
    assert [len(ax.lines) for ax in fig.axes] == [4, 4, 3, 4]  # simpo is reference-free: no KL margin
    adadpo, dpo_small, dpo_large, _ = loss_ax.lines
    assert adadpo.get_linestyle() == "-" and dpo_small.get_linestyle() == "--"
    assert to_hex(adadpo.get_color()) == to_hex(dpo_small.get_color()) != to_hex(dpo_large.get_color())
    assert list(adadpo.get_xdata()) == [5, 10]  # the eval steps
    assert list(adadpo.get_ydata()) == pytest.approx([0.7 - 0.05 + 0.1, 0.7 - 0.1 + 0.1])
    assert list(margin_ax.lines[2].get_ydata()) == pytest.approx([0.1 * 5 + 0.1, 0.1 * 10 + 0.1])
    legend_labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_labels == [
        "adadpo β=0.01 lr=5e-07",
        "dpo β=0.01 lr=5e-07",
        "dpo β=0.1 lr=5e-07",
        "simpo β=2 lr=5e-07",
    ]


def test_missing_eval_metric_falls_back_to_train_and_says_so(tmp_path, runs):
    no_eval = load_run(write_run(tmp_path / "no-eval", "adadpo", 0.05, with_eval=False))
    fig = plot_training_dynamics([no_eval])
    loss_ax = fig.axes[0]
    assert loss_ax.get_title() == "Loss (train; no eval metric logged)" and loss_ax.get_ylabel() == "loss"
    assert list(loss_ax.lines[0].get_xdata()) == list(range(1, 11))

    mixed = plot_training_dynamics([*runs[:2], no_eval])
    assert mixed.axes[1].get_title() == "Reward accuracy (train; eval missing in some runs)"
    assert len(mixed.axes[1].lines) == 3

    only_simpo = plot_training_dynamics([runs[3]])
    assert only_simpo.axes[2].get_title() == "β × KL margin (not logged by any run)" and not only_simpo.axes[2].lines


def test_grad_balance_ratio_on_a_log_axis_and_log10_balance_on_a_linear_one(runs):
    fig = plot_grad_balance(runs)
    (ax,) = fig.axes  # only the per-token mean is logged here: one panel
    assert ax.get_title() == "per token, |∂L/∂q_w| / |∂L/∂q_l|: mean over pairs"
    assert ax.get_yscale() == "log"
    balanced = [line for line in ax.lines if line.get_label() == "balanced (ratio = 1)"]
    assert len(balanced) == 1 and list(balanced[0].get_ydata()) == [1.0, 1.0]
    dpo_line = ax.lines[1]
    assert list(dpo_line.get_ydata()) == pytest.approx([1 / s for s in range(1, 11)])
    for run in runs[:2]:  # these two log only the per-sequence log10 median; the other two the per-token mean
        run.log_history = [{"step": s, "adadpo/log10_grad_balance_median": -float(s)} for s in (1, 2, 3)]
    token_panel, log10_panel = plot_grad_balance(runs).axes
    assert log10_panel.get_title() == "per sequence, log10 |∂L/∂P_w| / |∂L/∂P_l|: median over pairs"
    assert log10_panel.get_yscale() == "linear"  # log10 values go negative: a linear axis, balanced at 0
    assert [line.get_label() for line in log10_panel.lines][-1] == "balanced (log10 ratio = 0)"
    assert len(token_panel.lines) == len(log10_panel.lines) == 3  # two runs each + the balanced line
    assert list(log10_panel.lines[0].get_ydata()) == pytest.approx([-1.0, -2.0, -3.0])
    for run in runs:
        run.log_history = [{"step": 1, "loss": 0.5}]
    with pytest.raises(ValueError, match="No run logged `adadpo/token_grad_balance_mean` or"):
        plot_grad_balance(runs)


def results_rows():
    rows = []
    for loss in ("adadpo", "dpo"):
        for lr in (3e-7, 1e-6):
            for beta in (0.01, 0.1, 1.0):
                value = math.log10(beta) + (0.2 if loss == "adadpo" else 0.0) + lr * 1e5
                rows.append({"loss_type": loss, "learning_rate": lr, "beta": beta, "status": "finished", "m": value})
    rows.append({"loss_type": "dpo", "learning_rate": 3e-7, "beta": 0.5, "status": "failed"})  # no metric: left out
    return rows


def test_metric_vs_log_beta_and_the_adadpo_minus_dpo_panel():
    fig = plot_metric_vs_beta(results_rows(), "m")
    metric_ax, diff_ax = fig.axes
    assert len(metric_ax.lines) == 4  # (adadpo, dpo) x two learning rates
    assert list(metric_ax.lines[0].get_xdata()) == pytest.approx([-2.0, -1.0, 0.0])
    assert metric_ax.get_xlabel() == "log10 β" and metric_ax.lines[0].get_linestyle() == "-"
    differences = [line for line in diff_ax.lines if line.get_label().startswith("adadpo − dpo")]
    assert len(differences) == 2
    for line in differences:
        assert list(line.get_ydata()) == pytest.approx([0.2, 0.2, 0.2])

    only_dpo = plot_metric_vs_beta([r for r in results_rows() if r["loss_type"] == "dpo"], "m")
    assert "needs adadpo and dpo" in only_dpo.axes[1].texts[0].get_text()
    with pytest.raises(ValueError, match="numeric `nope`"):
        plot_metric_vs_beta(results_rows(), "nope")


def test_run_folder_errors_name_the_missing_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no trainer_state.json: pass a training output_dir"):
        load_run(tmp_path / "empty")
    run = write_run(tmp_path / "norecipe", "dpo", 0.1)
    (run / "adadpo_config.yaml").unlink()
    with pytest.raises(ValueError, match="adadpo_config.yaml"):
        load_run(run)


def write_results_csv(sweep_dir, rows):
    columns = ["cell", "loss_type", "beta", "learning_rate", "status", "eval_rewards/accuracies"]
    lines = [",".join(columns)] + [",".join(str(row.get(c, "")) for c in columns) for row in rows]
    (sweep_dir / "results.csv").write_text("\n".join(lines) + "\n")


def test_plot_runs_script_writes_non_empty_pngs(tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    rows = []
    for loss in ("adadpo", "dpo"):
        for beta in (0.01, 0.1):
            cell = f"beta-{beta:g}_loss-{loss}"
            write_run(sweep_dir / cell, loss, beta, recipe_name=None)  # recipe in <sweep>/recipes/, as sweep.py does
            rows.append({"cell": cell, "loss_type": loss, "beta": beta, "learning_rate": 5e-7, "status": "finished"})
            rows[-1]["eval_rewards/accuracies"] = 0.6 + beta
    write_results_csv(sweep_dir, rows)
    extra = write_run(tmp_path / "other-run", "ada_simpo", 2.0)

    written = plot_runs.main([str(extra), "--sweep_dir", str(sweep_dir), "--out", str(tmp_path / "plots")])
    names = sorted(path.name for path in written)
    assert names == ["grad_balance.png", "metric_vs_beta_eval_rewards_accuracies.png", "training_dynamics.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert "wrote" in capsys.readouterr().out

    with pytest.raises(ValueError, match=r"no numeric values for \['eval_loss'\]"):
        plot_runs.main(["--sweep_dir", str(sweep_dir), "--out", str(tmp_path / "p2"), "--metric", "eval_loss"])
    assert not (tmp_path / "p2").exists()


def test_own_results_file_with_a_benchmark_column(tmp_path):
    scores = tmp_path / "scores.csv"
    lines = ["loss_type,learning_rate,beta,alpaca_lc"]
    lines += [
        f"{loss},5e-07,{beta},{40 + beta * 10 + (2 if loss == 'adadpo' else 0)}"
        for loss in ("adadpo", "dpo")
        for beta in (0.01, 0.1)
    ]
    scores.write_text("\n".join(lines) + "\n")
    argv = ["--results", str(scores), "--metric", "alpaca_lc", "--out", str(tmp_path / "plots")]
    (written,) = plot_runs.main(argv)
    assert written.name == "metric_vs_beta_alpaca_lc.png" and written.stat().st_size > 10_000

    scores.write_text("loss_type,beta,alpaca_lc\ndpo,0.1,40\n")
    with pytest.raises(
        ValueError, match=r"need columns loss_type, learning_rate and beta; missing: \['learning_rate'\]"
    ):
        plot_runs.main(argv)


def test_colour_follows_the_learning_rate_when_only_it_varies_and_markers_when_both_do(tmp_path):
    same_beta = [load_run(write_run(tmp_path / f"dpo-{lr}", "dpo", 0.1, lr=lr)) for lr in (1e-6, 1e-5)]
    fig = plot_training_dynamics(same_beta)
    first, second = fig.axes[0].lines
    assert to_hex(first.get_color()) != to_hex(second.get_color())
    assert fig.get_suptitle().endswith("line style = loss, colour = learning rate")

    both = [*same_beta, load_run(write_run(tmp_path / "dpo-big-beta", "dpo", 1.0, lr=1e-6))]
    fig = plot_training_dynamics(both)
    markers = [line.get_marker() for line in fig.axes[0].lines]
    assert markers[0] == markers[2] != markers[1]  # marker by learning rate
    assert to_hex(fig.axes[0].lines[0].get_color()) != to_hex(fig.axes[0].lines[2].get_color())  # colour by beta
    assert fig.get_suptitle().endswith("colour = β, marker = learning rate")
