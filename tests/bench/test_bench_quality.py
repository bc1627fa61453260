"""`bench/quality.py` (`make bench-quality`) end to end on the tiny random model: on-policy pairs from IFEval's train
half (scored by lm-eval's checkers), `dpo` and `adadpo` trained through `accelerate launch scripts/run_adadpo.py` with identical recipes, the
three models evaluated on held-out prompts, and one table + JSON whose numbers come from those runs."""

import json
import sys

import pytest
import yaml
from conftest import REPO_ROOT


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
    out = tmp_path / "quick"

    # The two runs differ only in the loss and where they write.
    recipes = {loss: yaml.safe_load((out / f"{loss}.yaml").read_text()) for loss in ("dpo", "adadpo")}
    for recipe in recipes.values():
        recipe.pop("loss_type"), recipe.pop("output_dir")
    assert recipes["dpo"] == recipes["adadpo"]
    assert recipes["dpo"]["test_split_size"] == TINY["eval_pairs"] and recipes["dpo"]["seed"] == 42

    pairs = [json.loads(line) for line in (out / "prefs.jsonl").read_text().splitlines()]
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
