"""`bench/dynamics.py --quick` (`make bench-dynamics`'s pipeline) end to end on the tiny random model: HH-RLHF pairs
from ../shared/data, four runs through scripts/run_adadpo.py that differ only in loss and beta, the Figure 2 and
gradient-balance PNGs from scripts/plot_runs.py, and a table whose numbers are the runs' last held-out evaluations."""

import json
import os
import sys

import pytest
import yaml

from tests.helpers.runs import REPO_ROOT


sys.path.insert(0, str(REPO_ROOT / "bench"))
import dynamics  # noqa: E402


pytestmark = pytest.mark.skipif(not dynamics.HH_RLHF.is_file(), reason=f"{dynamics.HH_RLHF} not present")


def test_single_turn_pairs_are_real_short_and_fixed():
    from adadpo.testing import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    pairs = dynamics.single_turn_pairs(dynamics.HH_RLHF, tokenizer, 96, 24, seed=0)
    assert len(pairs) == 24 and pairs == dynamics.single_turn_pairs(dynamics.HH_RLHF, tokenizer, 96, 24, seed=0)
    for pair in pairs:
        assert pair["chosen"] != pair["rejected"] and pair["chosen"].count("\n\nHuman:") == 1
        assert max(len(tokenizer(t)["input_ids"]) for t in pair.values()) <= 96
    with pytest.raises(ValueError, match="single-turn pairs.*--multi_turn"):
        dynamics.single_turn_pairs(dynamics.HH_RLHF, tokenizer, 4, 10, seed=0)
    several = dynamics.single_turn_pairs(dynamics.HH_RLHF, tokenizer, 192, 60, seed=0, multi_turn=True)
    assert any(pair["chosen"].count("\n\nHuman:") > 1 for pair in several)  # multi-turn pairs are drawn too
    assert all(max(len(tokenizer(t)["input_ids"]) for t in pair.values()) <= 192 for pair in several)


def test_verdicts_state_ties_and_losses_plainly():
    finals = {
        ("dpo", 0.05): {"eval_loss": 0.6, "eval_rewards/accuracies": 0.5, "eval_kl/beta_margin": 0.1},
        ("adadpo", 0.05): {"eval_loss": 0.5, "eval_rewards/accuracies": 0.5, "eval_kl/beta_margin": 0.0},
        ("dpo", 0.01): {},
        ("adadpo", 0.01): {},
    }
    rows = {(r["beta"], r["key"]): r for r in dynamics.verdicts(finals)}
    assert rows[(0.05, "eval_loss")]["paper_direction_holds"] is True  # lower is better
    assert rows[(0.05, "eval_rewards/accuracies")]["paper_direction_holds"] is False  # a tie is not a win
    assert rows[(0.05, "eval_kl/beta_margin")]["paper_direction_holds"] is False
    assert rows[(0.01, "eval_loss")]["paper_direction_holds"] is None
    table = dynamics.markdown(list(rows.values()), {})
    assert "| 0.05 | eval loss (lower) | 0.600 | 0.500 | -0.100 | yes |" in table
    assert "**no** (tie)" in table


@pytest.mark.slow
def test_dynamics_quick_end_to_end(tmp_path):
    result = dynamics.main(["--quick", "--out", str(tmp_path)])
    out = tmp_path / "quick"

    # Four runs from recipes that differ only in loss, beta and where they write: same data, order, seed, lr.
    recipes = {p.stem: yaml.safe_load(p.read_text()) for p in (out / "recipes").glob("*.yaml")}
    assert sorted(recipes) == ["adadpo-beta0.01", "adadpo-beta0.05", "dpo-beta0.01", "dpo-beta0.05"]
    for recipe in recipes.values():
        for key in ("loss_type", "beta", "output_dir", "run_name"):
            recipe.pop(key)
    assert all(recipe == recipes["dpo-beta0.05"] for recipe in recipes.values())
    assert recipes["dpo-beta0.05"]["adadpo_clip"] == 2.0 and recipes["dpo-beta0.05"]["adadpo_length_normalize"]

    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    size = dynamics.SIZES["quick"]
    assert len(pairs) == size["train_pairs"] + size["eval_pairs"]

    # The table's numbers are each run's last held-out evaluation, and there were several evaluations.
    for name, final in result["final"].items():
        history = json.loads((out / name / "trainer_state.json").read_text())["log_history"]
        evals = [entry for entry in history if "eval_loss" in entry]
        assert len(evals) >= 2 and final == evals[-1]
    rows = {(r["beta"], r["key"]): r for r in result["comparison"]}
    assert len(rows) == 8
    for (beta, key), row in rows.items():
        assert row["dpo"] == result["final"][f"dpo-beta{beta:g}"][key]
        assert row["adadpo"] == result["final"][f"adadpo-beta{beta:g}"][key]

    # AdaDPO's coefficient moved off beta (the policy left the reference), DPO's did not exist to move.
    for beta in ("0.05", "0.01"):
        stats = result["adadpo_coefficient"][beta]
        assert stats["beta_w_over_beta_min"] < 1.0 < stats["beta_w_over_beta_max"] <= 2.0 + 1e-6
        assert 0.0 <= stats["clip_fraction_mean"] <= 1.0
    assert sorted(result["figures"]) == ["plots/grad_balance.png", "plots/training_dynamics.png"]
    for figure in result["figures"]:
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"
    table = (out / "dynamics.md").read_text()
    assert table.count("\n| 0.05 |") == 5 and "paper's direction holds?" in table
    assert json.loads((out / "dynamics.json").read_text())["comparison"] == result["comparison"]


@pytest.mark.slow
def test_seeded_dynamics_judge_per_pair_values_that_match_each_runs_evaluation(tmp_path, monkeypatch):
    """`--seeds 0 1`: eight runs, then per-pair held-out values from each final model; their means equal each run's
    own last evaluation (logged by the trainer during training: an independent computation), and every judged cell
    gets a verdict under the pre-registered rule (here "not tested": a tiny random model learns nothing)."""
    result = dynamics.main(["--quick", "--seeds", "0", "1", "--out", str(tmp_path)])
    out = tmp_path / "quick"
    logged = {
        "eval loss": "eval_loss",
        "β×KL margin": "eval_kl/beta_margin",
        "held-out chosen log-prob change per token": "eval_logratio/chosen_per_token",
        "held-out rejected log-prob change per token": "eval_logratio/rejected_per_token",
    }
    for name, values in result["held_out_values"].items():
        final = dynamics.final_eval(out / name)
        assert final["step"] == dynamics.SIZES["quick"]["max_steps"]  # the evaluation of the final weights
        for panel, key in logged.items():
            assert sum(values[panel]) / len(values[panel]) == pytest.approx(final[key], abs=1e-5), (name, panel)
        # The judged reward accuracy is the plain one, (log-ratio margin > 0), for both losses. The trainer's
        # `rewards/accuracies` compares the rewards the loss applied, beta_w-scaled on AdaDPO's chosen side: the same
        # number for DPO only.
        plain = [float(margin > 0) for margin in values["β×KL margin"]]
        assert values["reward accuracy"] == plain
        if name.startswith("dpo"):
            assert sum(plain) / len(plain) == pytest.approx(final["eval_rewards/accuracies"], abs=1e-5), name
    # every seed holds out the same pairs (a pilot on the others never sees them); the seeds order the training
    held_out = {name.split("-seed")[1]: len(v["eval loss"]) for name, v in result["held_out_values"].items()}
    assert set(held_out.values()) == {dynamics.SIZES["quick"]["eval_pairs"]}
    reference = [
        result["held_out_values"][f"dpo-beta0.05-seed{seed}"]["held-out reference chosen log-prob"] for seed in (0, 1)
    ]
    assert reference[0] == reference[1]  # the same pairs, in the same order
    trained_on = [json.loads((out / f"dpo-beta0.05-seed{seed}" / "trainer_state.json").read_text()) for seed in (0, 1)]
    assert [e["loss"] for e in trained_on[0]["log_history"] if "loss" in e][1:] != [
        e["loss"] for e in trained_on[1]["log_history"] if "loss" in e
    ][1:]  # the seeds do order the training pairs differently
    rows = result["verdicts"]["rows"]
    assert len(rows) == 2 * 5 and {row["verdict"] for row in rows} <= {"not tested", "reported"}
    assert result["verdicts"]["overall"] == "inconclusive" and (out / "dynamics_seeded.md").is_file()

    # The trained pairs are the run's own first batches: their reference log-probs are what the policy logged at steps
    # 1 and 2 (the warm-up's first step has learning rate 0, so the weights were the reference's until step 3); the
    # seeds trained on different pairs
    for seed in (0, 1):
        trained = result["held_out_values"][f"dpo-beta0.05-seed{seed}"]["trained reference chosen log-prob"]
        batch = dynamics.SIZES["quick"]["batch"]
        logged = [e for e in dynamics.history(out / f"dpo-beta0.05-seed{seed}") if "logps/chosen" in e]
        steps = min(dynamics.TRAINED_BATCHES, dynamics.SIZES["quick"]["max_steps"])
        assert batch * (steps - 1) < len(trained) <= batch * steps  # the data checks dropped one of the 16 drawn
        for step in (0, 1):
            reference = trained[step * batch : (step + 1) * batch]
            assert sum(reference) / batch == pytest.approx(logged[step]["logps/chosen"], rel=1e-5), (seed, step)
    trained = [
        result["held_out_values"][f"dpo-beta0.05-seed{seed}"]["trained reference chosen log-prob"] for seed in (0, 1)
    ]
    assert trained[0] != trained[1]

    # The mechanism table: the per-pair changes pooled over seeds
    mechanism = {(row["beta"], row["loss"]): row for row in result["mechanism"]}
    assert len(mechanism) == 4
    for (beta, loss), row in mechanism.items():
        for split, side in (("held-out", "rejected"), ("trained", "chosen")):
            pooled = [
                value
                for seed in (0, 1)
                for value in result["held_out_values"][f"{loss}-beta{beta:g}-seed{seed}"][
                    f"{split} {side} log-prob change per token"
                ]
            ]
            assert row[f"{split} {side}"][0] == pytest.approx(sum(pooled) / len(pooled))
            assert row[f"{split} {side}"][1] < row[f"{split} {side}"][0] < row[f"{split} {side}"][2]
    assert "The mechanism (2 seeds)" in (out / "dynamics_seeded.md").read_text()

    # The per-pair values are kept with what they came from: reused as they are, computed again for other weights
    calls = []
    monkeypatch.setattr(dynamics, "held_out_values", lambda *args: calls.append(args) or {"eval loss": [0.0]})
    run_dir = out / "dpo-beta0.05-seed0"
    recipe = dynamics.SweepFolder(out).recipe(run_dir.name)
    assert dynamics.cached_held_out_values(run_dir, recipe) == result["held_out_values"][run_dir.name] and not calls
    os.utime(run_dir / "model.safetensors", ns=(0, 0))  # as if the run had been trained again
    assert dynamics.cached_held_out_values(run_dir, recipe) == {"eval loss": [0.0]} and len(calls) == 1
    assert sorted(result["figures"]) == ["plots/mechanism.png", "plots/training_dynamics_seeded.png"]
    for figure in result["figures"]:
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_pilot_trains_on_the_training_split_only_and_picks_by_its_rule(tmp_path):
    """`--pilot_learning_rates`: DPO per rate on the seeded runs' training split (never a held-out pair), and the rate
    and step count of the highest pilot-validation reward accuracy (ties: fewer steps)."""
    from types import SimpleNamespace

    from adadpo.data import load_raw_datasets

    result = dynamics.main(["--quick", "--pilot_learning_rates", "1e-3", "3e-2", "--out", str(tmp_path)])
    out = tmp_path / "quick"
    drawn = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    piloted = [json.loads(line) for line in (out / "pilot" / "pairs.jsonl").read_text().splitlines()]
    size = dynamics.SIZES["quick"]
    mixture = dynamics.held_out_mixture(out / "pairs.jsonl", size["eval_pairs"])
    held_out = load_raw_datasets(SimpleNamespace(dataset_mixture=mixture, test_split_size=None))["test"].to_list()
    key = lambda pair: (pair["chosen"], pair["rejected"])  # noqa: E731
    assert len(held_out) == size["eval_pairs"] and not {key(p) for p in piloted} & {key(p) for p in held_out}
    assert sorted(map(key, piloted + held_out)) == sorted(map(key, drawn))

    points = [(p["reward accuracy"], -p["step"], -float(rate)) for rate, c in result["curves"].items() for p in c]
    accuracy, neg_step, neg_rate = max(points)
    rate = -neg_rate
    assert (result["learning_rate"], result["max_steps"]) == (rate, -neg_step)
    assert all(len(c) == size["max_steps"] // size["eval_steps"] for c in result["curves"].values())  # no repeats
    assert (out / "pilot" / "plots" / "training_dynamics.png").is_file()
    assert f"learning rate **{rate:g}**" in (out / "pilot" / "pilot.md").read_text()


def test_runs_listing_other_held_out_pairs_are_not_paired():
    """Per-pair values pair DPO with AdaDPO (and seed with seed) by position: another order is refused, not judged."""
    same = {"held-out reference chosen log-prob": [-1.0, -2.0, -3.0]}
    values = {("dpo", 0.05, 0): same, ("adadpo", 0.05, 0): dict(same), ("dpo", 0.05, 1): dict(same)}
    dynamics.held_out_pairs_match(values)
    values[("adadpo", 0.05, 1)] = {"held-out reference chosen log-prob": [-1.0, -3.0, -2.0]}
    with pytest.raises(ValueError, match="adadpo-beta0.05-seed1 lists other held-out pairs"):
        dynamics.held_out_pairs_match(values)
