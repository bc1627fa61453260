"""`bench/quality.py` (`make bench-quality`) end to end on the tiny random model: on-policy pairs from IFEval's train
half (scored by lm-eval's checkers), `dpo` and `adadpo` trained through `accelerate launch scripts/run_adadpo.py` with identical recipes, the
three models evaluated on held-out prompts, and one table + JSON whose numbers come from those runs."""

import json
import sys

import pytest
import yaml

from tests.helpers.runs import REPO_ROOT


sys.path.insert(0, str(REPO_ROOT / "bench"))
import quality  # noqa: E402


TINY = {
    "train_prompts": 64,  # a random model ties on most IFEval prompts (every sample fails the same instructions)
    "num_samples": 4,
    "gen_tokens": 16,
    "max_pairs": 8,
    "eval_pairs": 1,
    "eval_prompts": 6,
    "eval_tokens": 16,
    "epochs": 1,
}


@pytest.mark.slow
@pytest.mark.skipif(not quality.IFEVAL_FILE.is_file(), reason=f"{quality.IFEVAL_FILE} not present")
def test_quality_benchmark_end_to_end_on_tiny_model(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(quality.SIZES, "quick", TINY)
    monkeypatch.setattr(quality, "prepare_smollm2", lambda folder: tiny_model_dir)
    result = quality.main(["--quick", "--out", str(tmp_path)])
    out = tmp_path / "quick" / f"lr{quality.TRAIN_SETTINGS['learning_rate']:g}"

    # The two runs differ only in the loss and where they write.
    recipes = {loss: yaml.safe_load((out / f"{loss}.yaml").read_text()) for loss in ("dpo", "adadpo")}
    for recipe in recipes.values():
        recipe.pop("loss_type"), recipe.pop("output_dir")
    assert recipes["dpo"] == recipes["adadpo"]
    assert recipes["dpo"]["test_split_size"] == TINY["eval_pairs"] and recipes["dpo"]["seed"] == 42

    pairs = [json.loads(line) for line in (out.parent / "prefs.jsonl").read_text().splitlines()]
    assert result["pairs"] == len(pairs) > TINY["eval_pairs"]
    assert result["trained_pairs"] == min(len(pairs) - TINY["eval_pairs"], TINY["max_pairs"])
    assert all(row["score_chosen"] > row["score_rejected"] for row in pairs)

    rows = {row["model"]: row for row in result["rows"]}
    assert list(rows) == ["base", "dpo", "adadpo"] and result["held_out_prompts"] == TINY["eval_prompts"]
    assert rows["base"]["win_rate_vs_base"] == 0.5 and rows["base"]["reward_accuracy"] is None
    for loss in ("dpo", "adadpo"):
        # the reward columns are the last evaluation on the held-out pairs in that run's trainer state
        history = json.loads((out / loss / "trainer_state.json").read_text())["log_history"]
        final = [entry for entry in history if "eval_rewards/accuracies" in entry][-1]
        assert rows[loss]["reward_accuracy"] == final["eval_rewards/accuracies"]
        assert rows[loss]["reward_margin"] == final["eval_rewards/margins"]
        steps = [entry for entry in history if "adadpo/beta_w_min" in entry]
        assert rows[loss]["beta_w_min_train"] == min(entry["adadpo/beta_w_min"] for entry in steps)
        assert rows[loss]["beta_w_max_train"] == max(entry["adadpo/beta_w_max"] for entry in steps)
        assert 0.0 <= rows[loss]["win_rate_vs_base"] <= 1.0 and rows[loss]["mean_response_tokens"] > 0
        wins, losses, ties = map(int, rows[loss]["wins_losses_ties_vs_base"].split("/"))
        assert (
            wins + losses + ties == result["held_out_prompts_scored"]
            and 0.0 < rows[loss]["sign_test_p_vs_base"] <= 1.0
        )
    assert rows["dpo"]["beta_w_mean"] == pytest.approx(recipes["dpo"]["beta"])  # DPO's coefficient is beta itself

    evaluation = json.loads((out / "eval" / "results.json").read_text())
    by_name = {model["name"]: model for model in evaluation["models"]}
    for metric in (
        "prompt_level_strict_acc",
        "prompt_level_loose_acc",
        "inst_level_strict_acc",
        "inst_level_loose_acc",
    ):
        assert rows["adadpo"][metric] == by_name["adadpo"]["ifeval"][metric]
    assert result["held_out_prompts_scored"] == evaluation["num_scored"] <= TINY["eval_prompts"]
    assert json.loads((out / "quality.json").read_text())["rows"] == result["rows"]
    table = (out / "quality.md").read_text()
    assert table.splitlines()[0].startswith("| model | prompt_level_strict_acc |") and "| adadpo |" in table

    # The head-to-head row is recomputed from the per-prompt answers, independently of the bench's helper.
    answers = [json.loads(line) for line in (out / "eval" / "answers.jsonl").read_text().splitlines()]
    decided = [(a["scores"]["adadpo"], a["scores"]["dpo"]) for a in answers if a["scores"]["dpo"] is not None]
    h2h = result["adadpo_vs_dpo"]
    assert (h2h["wins"], h2h["losses"], h2h["ties"]) == (
        sum(x > y for x, y in decided),
        sum(x < y for x, y in decided),
        sum(x == y for x, y in decided),
    )
    assert h2h["responses_differing"] == sum(a["responses"]["adadpo"] != a["responses"]["dpo"] for a in answers)

    # A re-run reuses every stage (nothing resampled, retrained or re-evaluated) and reports the same numbers ...
    made = [out.parent / "prefs.jsonl", out / "dpo" / "trainer_state.json", out / "adadpo" / "trainer_state.json"]
    made.append(out / "eval" / "results.json")
    stamps = [path.stat().st_mtime_ns for path in made]
    rerun = quality.main(["--quick", "--out", str(tmp_path)])
    assert rerun["rows"] == result["rows"] and rerun["stages_reused"] == ["generate", "train", "evaluate"]
    assert [path.stat().st_mtime_ns for path in made] == stamps and result["stages_reused"] == []
    # ... but output made with other settings is refused, not silently reused.
    monkeypatch.setitem(quality.SIZES, "quick", {**TINY, "epochs": 2})
    with pytest.raises(SystemExit, match=r"other settings \(changed: sizes\)"):
        quality.main(["--quick", "--out", str(tmp_path)])
    assert json.loads((out / "run.json").read_text())["sizes"] == TINY


def test_stages_made_with_other_settings_are_refused(tmp_path):
    record = tmp_path / "run" / "run.json"
    record.parent.mkdir()
    with pytest.raises(SystemExit, match=r"holds runs with no record \(run.json\) of the settings"):
        quality.check_or_record(record, {"settings": {"learning_rate": 2e-5}}, "runs", output_exists=True)
    assert not record.exists()  # output of unknown origin is not adopted
    quality.check_or_record(record, {"settings": {"learning_rate": 2e-5}, "sizes": {"epochs": 2}}, "runs", False)
    same = {"settings": {"learning_rate": 2e-5}, "sizes": {"epochs": 2}}
    quality.check_or_record(record, same, "runs", output_exists=True)
    with pytest.raises(SystemExit, match=r"holds runs made with other settings \(changed: settings\)"):
        quality.check_or_record(record, {**same, "settings": {"learning_rate": 1e-4}}, "runs", output_exists=True)
    assert json.loads(record.read_text())["settings"] == {"learning_rate": 2e-5}  # the record is left as it was


def test_beta_w_over_training_is_read_from_every_logged_step(tmp_path):
    """`train` on a finished run only parses its trainer state: beta_w's extremes over all steps (not the final
    evaluation's mean) and the clip fraction averaged over steps."""
    run = tmp_path / "adadpo"
    run.mkdir()
    (run / "all_results.json").write_text("{}")  # finished: nothing is launched
    steps = [(0.10, 0.10, 0.0), (0.07, 0.15, 0.25), (0.12, 0.20, 0.5), (0.09, 0.18, 0.0)]  # min, max, clipped
    history = [
        {"step": i + 1, "adadpo/beta_w_min": low, "adadpo/beta_w_max": high, "adadpo/clip_fraction": clipped}
        for i, (low, high, clipped) in enumerate(steps)
    ]
    history.append(
        {"step": 4, "eval_rewards/accuracies": 0.75, "eval_rewards/margins": 0.4, "eval_adadpo/beta_w_mean": 0.11}
    )
    (run / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    metrics, ran = quality.train("adadpo", tmp_path / "pairs.jsonl", tmp_path, tmp_path, TINY, quality.TRAIN_SETTINGS)
    assert not ran
    assert metrics == {
        "reward_accuracy": 0.75,
        "reward_margin": 0.4,
        "beta_w_mean": 0.11,
        "beta_w_min_train": 0.07,
        "beta_w_max_train": 0.20,
        "clip_fraction_step_mean": pytest.approx(0.1875),
    }


def test_head_to_head_counts_scored_prompts_and_differing_responses(tmp_path):
    answers = tmp_path / "answers.jsonl"
    rows = [  # (adadpo, dpo) scores and responses
        ((1.0, 0.5), ("a", "b")),
        ((0.0, 0.5), ("c", "d")),
        ((0.5, 0.5), ("e", "e")),
        ((None, None), ("f", "g")),  # unscored (needs punkt): not counted, but its responses differ
        ((1.0, 0.0), ("h", "i")),
    ]
    answers.write_text(
        "".join(
            json.dumps({"scores": {"adadpo": a, "dpo": d}, "responses": {"adadpo": ra, "dpo": rd}}) + "\n"
            for (a, d), (ra, rd) in rows
        )
    )
    h2h = quality.head_to_head(answers, "adadpo", "dpo")
    assert (h2h["wins"], h2h["losses"], h2h["ties"], h2h["responses_differing"], h2h["prompts"]) == (2, 1, 1, 4, 5)
    assert h2h["sign_test_p"] == pytest.approx(1.0)  # 2 wins of 3 decided: p = 2 * (1 + 3) / 8 = 1.0
