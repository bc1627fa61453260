"""IFEval through lm-eval's checkers, offline: the shipped 541-prompt file, the fixed train / held-out split, the
prompts a missing NLTK punkt model leaves unscored (named and counted, never guessed), and our four numbers equal to
those of lm-eval's own `process_results` + metric aggregation on a fixed set of responses."""

import json

import pytest

from tests.helpers.runs import REPO_ROOT


pytest.importorskip("lm_eval", reason='IFEval needs the optional extra: pip install -e ".[eval]"')

from adadpo.evaluation.ifeval import (  # noqa: E402
    METRICS,
    describe_unscored,
    is_heldout,
    load_ifeval,
    prompt_scores,
    score_ifeval,
    seed_checkers,
    unscorable,
)


IFEVAL_FILE = REPO_ROOT.parent / "shared" / "data" / "ifeval_input_data.jsonl"
PUNKT_IDS = {"length_constraints:number_sentences", "change_case:capital_word_frequency"}
pytestmark = pytest.mark.skipif(not IFEVAL_FILE.is_file(), reason=f"{IFEVAL_FILE} not present")


def punkt_installed() -> bool:
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab")
        return True
    except LookupError:
        return False


def fixed_responses(rows) -> list[str]:
    """Deterministic responses that pass some checkers and fail others: empty, echoes, case changes, JSON, quotes,
    sections, bullets, a postscript, a title, and highlighted text."""
    variants = [
        lambda r: "",
        lambda r: r["prompt"],
        lambda r: r["prompt"].lower(),
        lambda r: r["prompt"].upper(),
        lambda r: json.dumps({"answer": r["prompt"][:40]}),
        lambda r: f'"{r["prompt"][:80]}"',
        lambda r: "<<A Title>>\n\n*highlighted part* and *another one*\n\nP.S. thanks",
        lambda r: "* one\n* two\n* three\n\nSECTION 1\nfirst\nSECTION 2\nsecond",
        lambda r: "Sure. " + r["prompt"] + "\n\nIs there anything else I can help with?",
        lambda r: "word " * 320,
        lambda r: "My answer is yes.",
        lambda r: "Response 1\n******\nResponse 2",
    ]
    return [variants[i % len(variants)](row) for i, row in enumerate(rows)]


def test_shipped_file_and_split():
    rows = load_ifeval(IFEVAL_FILE)
    train, heldout = load_ifeval(IFEVAL_FILE, "train"), load_ifeval(IFEVAL_FILE, "heldout")
    assert len(rows) == 541 and (len(train), len(heldout)) == (275, 266)
    keys = {r["key"] for r in rows}
    assert {r["key"] for r in train} | {r["key"] for r in heldout} == keys
    assert not {r["key"] for r in train} & {r["key"] for r in heldout}
    assert all(is_heldout(r["key"]) for r in heldout) and not any(is_heldout(r["key"]) for r in train)
    types = {i for r in rows for i in r["instruction_id_list"]}
    assert len(types) == 25
    for part in (train, heldout):  # every instruction type is trained on and evaluated
        assert {i for r in part for i in r["instruction_id_list"]} == types
    # the split depends on the key alone, not on the order or the other rows
    assert load_ifeval(IFEVAL_FILE, "heldout") == heldout


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown IFEval part"):
        load_ifeval(IFEVAL_FILE, "test")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"key": 1, "prompt": "x", "instruction_id_list": ["no:such"], "kwargs": [{}]}) + "\n")
    with pytest.raises(ValueError, match="unknown: "):
        load_ifeval(bad)
    with pytest.raises(ValueError, match="responses"):
        score_ifeval(load_ifeval(IFEVAL_FILE)[:2], ["one"])


def test_missing_punkt_leaves_exactly_those_prompts_unscored():
    rows = load_ifeval(IFEVAL_FILE)
    skip = unscorable(rows)
    if punkt_installed():
        assert skip == {}
        result = score_ifeval(rows, fixed_responses(rows))
        assert result["num_scored"] == 541 and result["unscored_reason"] is None
        return
    expected = {r["key"] for r in rows if PUNKT_IDS & set(r["instruction_id_list"])}
    assert set(skip) == expected and len(expected) == 64
    assert {i for needs in skip.values() for i in needs} == PUNKT_IDS
    result = score_ifeval(rows, fixed_responses(rows))
    assert (result["num_prompts"], result["num_scored"], result["num_unscored"]) == (541, 477, 64)
    assert "64 prompts not scored" in result["unscored_reason"] and "punkt" in result["unscored_reason"]
    assert "length_constraints:number_sentences (46 prompts)" in result["unscored_reason"]
    assert [p is None for p in result["per_prompt"]] == [r["key"] in skip for r in rows]
    assert describe_unscored({}) is None


def test_four_numbers_equal_lm_eval_process_results():
    """Cross-check against the harness's reference entry point: `process_results(doc, [response])` per prompt, then
    the task's aggregations (`mean` for prompt level, `agg_inst_level_acc` for instruction level)."""
    from lm_eval.api.metrics import mean
    from lm_eval.tasks.ifeval.utils import agg_inst_level_acc, process_results

    rows = load_ifeval(IFEVAL_FILE)
    responses = fixed_responses(rows)
    skip = unscorable(rows)
    reference = []
    for row, response in zip(rows, responses):
        if row["key"] not in skip:
            seed_checkers(row["key"])  # key 1122's checker draws a random letter (see seed_checkers)
            reference.append(process_results(row, [response]))
    ours = score_ifeval(rows, responses)
    expected = {
        metric: (mean if metric.startswith("prompt") else agg_inst_level_acc)([r[metric] for r in reference])
        for metric in METRICS
    }
    assert {metric: ours[metric] for metric in METRICS} == expected  # exactly, not approximately
    assert ours["num_scored"] == len(reference)
    # per prompt too, and the responses are a real test: some prompts pass, some fail, strict <= loose
    scored = [p for p in ours["per_prompt"] if p is not None]
    assert scored == [{m: r[m] for m in METRICS} for r in reference]
    assert 0 < expected["prompt_level_strict_acc"] < expected["prompt_level_loose_acc"] < 1
    assert 0 < expected["inst_level_strict_acc"] <= expected["inst_level_loose_acc"] < 1


def test_scores_do_not_depend_on_what_ran_before():
    import random

    rows = [r for r in load_ifeval(IFEVAL_FILE) if r["key"] == 1122]  # letter '#': the checker draws a letter
    assert rows and rows[0]["kwargs"][1]["letter"] == "#"
    response = "* one\n* two\n* three\n\nSECTION 1\nfirst\nSECTION 2\nsecond"
    results = []
    for seed in range(8):
        random.seed(seed)
        results.append(score_ifeval(rows, [response])["per_prompt"])
        assert random.random() == random.Random(seed).random()  # the caller's random state is left as it was
    assert all(r == results[0] for r in results)


def test_prompt_scores_and_a_known_answer():
    rows = [r for r in load_ifeval(IFEVAL_FILE) if r["instruction_id_list"] == ["punctuation:no_comma"]][:1]
    rows += [r for r in load_ifeval(IFEVAL_FILE) if r["instruction_id_list"] == ["change_case:english_lowercase"]][:1]
    result = score_ifeval(
        rows * 2,
        ["no commas here", "this answer is written in lowercase english words only.", "a, b", "Not Lowercase At All"],
    )
    assert prompt_scores(result["per_prompt"]) == [1.0, 1.0, 0.0, 0.0]
    assert result["prompt_level_strict_acc"] == 0.5 and result["inst_level_loose_acc"] == 0.5
