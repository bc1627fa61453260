"""Prompt loading for generation and evaluation (`adadpo.evaluation.prompts`: IFEval halves, user files in IFEval's
format, AlpacaEval / Arena-Hard / chat files) and the per-prompt comparison statistics (`adadpo.evaluation.stats`)."""

import json
import math

import pandas as pd
import pytest

from adadpo.evaluation.stats import pairwise_win_rate, win_loss_tie
from tests.helpers.runs import REPO_ROOT


IFEVAL_FILE = REPO_ROOT.parent / "shared" / "data" / "ifeval_input_data.jsonl"
needs_ifeval = pytest.mark.skipif(not IFEVAL_FILE.is_file(), reason=f"{IFEVAL_FILE} not present")


@pytest.fixture
def load_prompts():
    pytest.importorskip("lm_eval", reason='IFEval needs the optional extra: pip install -e ".[eval]"')
    from adadpo.evaluation.prompts import load_prompts

    return load_prompts


@needs_ifeval
def test_ifeval_halves_load_with_their_instructions_and_round_trip(load_prompts, tmp_path):
    from adadpo.evaluation.ifeval import load_ifeval
    from adadpo.evaluation.prompts import write_prompts_jsonl

    heldout = load_prompts("ifeval:heldout", ifeval_data=str(IFEVAL_FILE))
    rows = load_ifeval(IFEVAL_FILE, "heldout")
    assert len(heldout) == len(rows) == 266
    assert [p["ifeval"] for p in heldout] == rows and [p["id"] for p in heldout] == [str(r["key"]) for r in rows]
    assert heldout[0]["prompt"] == rows[0]["prompt"]
    assert len(load_prompts("ifeval:train", ifeval_data=str(IFEVAL_FILE), max_prompts=5)) == 5
    # a file in IFEval's format (jsonl or parquet, whose None-filled kwargs lm-eval ignores) loads the same
    jsonl = write_prompts_jsonl(heldout[:10], tmp_path / "p.jsonl")
    assert load_prompts(str(jsonl)) == heldout[:10]
    parquet = tmp_path / "p.parquet"
    pd.DataFrame(rows[:10]).to_parquet(parquet)
    assert [p["ifeval"]["instruction_id_list"] for p in load_prompts(str(parquet))] == [
        r["instruction_id_list"] for r in rows[:10]
    ]
    with pytest.raises(ValueError, match="Unknown IFEval part"):
        load_prompts("ifeval:test", ifeval_data=str(IFEVAL_FILE))


def test_load_prompts_reads_alpaca_eval_and_arena_hard_files(load_prompts, tmp_path):
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Say hi.", "dataset": "helpful_base"}]))
    assert load_prompts(str(alpaca)) == [{"id": "0", "prompt": "Say hi.", "dataset": "helpful_base"}]
    arena = tmp_path / "question.jsonl"
    arena.write_text(json.dumps({"question_id": "q1", "turns": [{"content": "Why?"}]}) + "\n")
    assert load_prompts(str(arena)) == [{"id": "q1", "prompt": "Why?"}]
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}))
    assert load_prompts(str(chat))[0]["prompt"] == "u"


def test_load_prompts_errors_name_the_fix(load_prompts, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompts(str(tmp_path / "missing.jsonl"))
    no_column = tmp_path / "q.jsonl"
    no_column.write_text(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(ValueError, match="Set `prompt_column`"):
        load_prompts(str(no_column))
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(ValueError, match="the ifeval scorer needs them"):
        load_prompts(str(plain), require_ifeval=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "instruction_id_list": ["no:such"], "kwargs": [{}]}) + "\n")
    with pytest.raises(ValueError, match=r"unknown: \['no:such'\]"):
        load_prompts(str(bad))
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"prompt": "  "}) + "\n")
    with pytest.raises(ValueError, match="the prompt is empty"):
        load_prompts(str(empty))


def test_win_loss_tie_and_exact_sign_test():
    record = win_loss_tie([1.0, 0.5, 0.0, 0.5], [0.0, 0.5, 1.0, 0.0])
    # 2 wins, 1 loss, 1 tie: p = 2 * P[Bin(3, 1/2) <= 1] = 2 * (1 + 3) / 8, capped at 1
    assert record == {"wins": 2, "losses": 1, "ties": 1, "sign_test_p": 1.0}
    scores, base = [1.0] * 13 + [0.0] * 7 + [0.5] * 60, [0.5] * 80  # 13 wins, 7 losses, 60 ties
    assert win_loss_tie(scores, base)["sign_test_p"] == pytest.approx(
        2 * sum(math.comb(20, k) for k in range(8)) / 2**20
    )
    assert win_loss_tie(scores, base)["sign_test_p"] == pytest.approx(0.2632, abs=1e-4)
    assert win_loss_tie([1.0] * 10, [0.0] * 10)["sign_test_p"] == pytest.approx(2 / 1024)  # 10-0: p < 0.01
    assert win_loss_tie([0.3, 0.7], [0.3, 0.7]) == {"wins": 0, "losses": 0, "ties": 2, "sign_test_p": 1.0}
    with pytest.raises(ValueError, match="baseline scores"):
        win_loss_tie([1.0], [])


def test_pairwise_win_rate_counts_ties_as_half():
    assert pairwise_win_rate([1.0, 0.5, 0.0, 0.5], [0.0, 0.5, 1.0, 0.0]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert pairwise_win_rate([0.3, 0.7], [0.3, 0.7]) == 0.5
    with pytest.raises(ValueError, match="baseline scores"):
        pairwise_win_rate([1.0], [])
