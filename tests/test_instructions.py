"""Verifiers (>= 3 positive and >= 3 negative examples per constraint type), the constraint registry, the built-in
prompt set, prompt loading and the evaluation metrics."""

import json
import math

import pandas as pd
import pytest

from adadpo.evaluation.instructions import (
    CONSTRAINT_TYPES,
    build_prompt_set,
    check_constraint,
    describe_constraint,
    instruction_accuracy,
    load_instruction_prompts,
    load_prompts,
    pairwise_win_rate,
    score_response,
    validate_constraint,
    win_loss_tie,
    write_prompts_jsonl,
)
from adadpo.evaluation.instructions.prompt_set import conflicts
from adadpo.evaluation.instructions.tasks import TASKS


# type -> (constraint, [responses that meet it], [responses that do not])
CASES = {
    "word_count_min": (
        {"type": "word_count_min", "min_words": 5},
        ["one two three four five", "It's a well-known fact that cats sleep.", "a b c d e f g"],
        ["one two three four", "Hello, world!", "   ", "well-known don't fly"],
    ),
    "word_count_max": (
        {"type": "word_count_max", "max_words": 4},
        ["one two three four", "Yes.", "It's well-known, sir!"],
        ["one two three four five", "The cat sat on the mat.", ""],
    ),
    "sentence_count_max": (
        {"type": "sentence_count_max", "max_sentences": 2},
        ["One sentence.", "First one. Second one!", "No end punctuation at all"],
        ["One. Two. Three.", "Why? Because! Done.", "   "],
    ),
    "paragraph_count": (
        {"type": "paragraph_count", "num_paragraphs": 2},
        ["First part.\n\nSecond part.", "A\nstill A\n\n  \nB", "\n\nLead.\n\nTail.\n\n"],
        ["Only one paragraph.", "One.\n\nTwo.\n\nThree.", "Line one.\nLine two."],
    ),
    "required_words": (
        {"type": "required_words", "words": ["rain", "light"]},
        ["Rain bends the light.", "LIGHT and rain.", "the light, the rain"],
        ["Rain only.", "Rainbows and lightning.", "Sunlight after the rains."],
    ),
    "forbidden_words": (
        {"type": "forbidden_words", "words": ["very", "thing"]},
        ["A clear answer.", "Everything is veryfine here.", "Things happen."],
        ["It is very good.", "One THING matters.", ""],
    ),
    "keyword_frequency": (
        {"type": "keyword_frequency", "word": "sun", "min_count": 2},
        ["The sun, the sun.", "Sun! SUN!", "sun sun sun"],
        ["The sun is hot.", "Sunny sundays.", "no star here"],
    ),
    "all_lowercase": (
        {"type": "all_lowercase"},
        ["all quiet here.", "p.s. fine", "numbers 123 are fine too"],
        ["Not quiet.", "all quiet but I", "1234"],
    ),
    "all_uppercase": (
        {"type": "all_uppercase"},
        ["LOUD AND CLEAR.", "P.S. YES", "ROOM 101"],
        ["Loud", "LOUD but not all", "   "],
    ),
    "bullet_count": (
        {"type": "bullet_count", "num_bullets": 3},
        ["* a\n* b\n* c", "Intro:\n- one\n- two\n- three\nDone.", "  * x\n  * y\n  * z"],
        ["* a\n* b", "* a\n* b\n* c\n* d", "*a\n*b\n*c"],
    ),
    "json_output": (
        {"type": "json_output"},
        ['{"answer": "yes"}', '```json\n{"a": [1, 2]}\n```', "[1, 2, 3]"],
        ['{"answer": "yes"', 'Here: {"a": 1}', "42"],
    ),
    "ends_with": (
        {"type": "ends_with", "phrase": "That is all."},
        ["Blue sky. That is all.", "that is all.", "Done!\nThat is all.  \n"],
        ["That is all. More text.", "That is all", "That was all."],
    ),
    "starts_with": (
        {"type": "starts_with", "phrase": "Sure"},
        ["Sure, here it is.", "  sure thing", "SURE."],
        ["Of course. Sure.", "Su re", ""],
    ),
    "title": (
        {"type": "title"},
        ["<<A Day at Sea>>\nText.", "Text then <<title>>", "<<x>>"],
        ["<A Day>", "<<   >>", "<<broken\ntitle>>"],
    ),
    "no_commas": (
        {"type": "no_commas"},
        ["No commas here.", "Semicolons; fine.", "A-B-C"],
        ["Well, no.", "a,b", "full-width，comma"],
    ),
    "postscript": (
        {"type": "postscript", "marker": "P.S."},
        ["Body.\n\nP.S. See you.", "Body\np.s. lowercase works", "P.S. only a postscript"],
        ["Body. P.S. inline", "Body.\nP.S.", "Body.\nPS missing dots"],
    ),
    "wrapped_in_quotes": (
        {"type": "wrapped_in_quotes"},
        ['"Hello there."', '  "two words"  ', '"a"b"'],
        ["Hello", '"unterminated', '""'],
    ),
}


def test_every_constraint_type_has_cases():
    assert set(CASES) == set(CONSTRAINT_TYPES)
    for kind, (constraint, positives, negatives) in CASES.items():
        assert constraint["type"] == kind
        assert len(positives) >= 3 and len(negatives) >= 3, kind


@pytest.mark.parametrize("kind", sorted(CASES))
def test_verifier_accepts_positives(kind):
    constraint, positives, _ = CASES[kind]
    for response in positives:
        assert check_constraint(constraint, response), (kind, response)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_verifier_rejects_negatives(kind):
    constraint, _, negatives = CASES[kind]
    for response in negatives:
        assert not check_constraint(constraint, response), (kind, response)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_empty_response_meets_no_constraint(kind):
    assert not check_constraint(CASES[kind][0], "  \n ")


def test_score_is_fraction_of_constraints_met():
    constraints = [{"type": "all_lowercase"}, {"type": "no_commas"}, {"type": "word_count_max", "max_words": 3}]
    assert score_response(constraints, "a b c") == 1.0
    assert score_response(constraints, "a, b c") == pytest.approx(2 / 3)
    assert score_response(constraints, "A, B, C, D") == 0.0
    with pytest.raises(ValueError, match="at least one constraint"):
        score_response([], "anything")


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        ({"type": "shout"}, "Unknown constraint type 'shout'"),
        ({"kind": "title"}, "'type' key"),
        ({"type": "word_count_max"}, r"takes parameters \['max_words'\]"),
        ({"type": "word_count_max", "max_words": 0}, "integer >= 1"),
        ({"type": "word_count_max", "max_words": True}, "integer >= 1"),
        ({"type": "required_words", "words": []}, "non-empty list"),
        ({"type": "ends_with", "phrase": "  "}, "non-empty string"),
        ({"type": "title", "extra": 1}, r"takes parameters \[\]"),
    ],
)
def test_bad_constraints_are_rejected_with_the_reason(constraint, message):
    with pytest.raises(ValueError, match=message):
        validate_constraint(constraint)


def test_prompt_set_size_split_and_determinism():
    prompts = build_prompt_set()
    assert len(prompts) >= 300
    assert prompts == build_prompt_set()  # deterministic
    assert len({p["id"] for p in prompts}) == len(prompts)
    assert len({p["prompt"] for p in prompts}) == len(prompts)
    train, heldout = load_instruction_prompts("train"), load_instruction_prompts("heldout")
    assert len(train) + len(heldout) == len(prompts) and len(heldout) == 80
    # held-out prompts are about tasks never seen in training
    task_of = {p["id"]: next(t for t, _ in TASKS if p["prompt"].startswith(t)) for p in prompts}
    assert not {task_of[p["id"]] for p in train} & {task_of[p["id"]] for p in heldout}
    assert {c["type"] for p in prompts for c in p["constraints"]} == set(CONSTRAINT_TYPES)
    with pytest.raises(ValueError, match="'train', 'heldout' or 'all'"):
        load_instruction_prompts("test")


def test_every_prompt_states_its_valid_non_conflicting_constraints():
    for prompt in build_prompt_set():
        kinds = [c["type"] for c in prompt["constraints"]]
        assert 1 <= len(kinds) <= 3
        for i, constraint in enumerate(prompt["constraints"]):
            validate_constraint(constraint)
            assert describe_constraint(constraint) in prompt["prompt"]
            assert not any(conflicts(constraint["type"], other) for other in kinds[i + 1 :]), prompt


def test_load_prompts_from_jsonl_and_parquet_round_trips_constraints(tmp_path):
    prompts = load_instruction_prompts("heldout")[:10]
    jsonl = write_prompts_jsonl(prompts, tmp_path / "p.jsonl")
    assert load_prompts(str(jsonl)) == prompts
    # Parquet unifies struct fields (absent parameters become None); the loader strips them again.
    parquet = tmp_path / "p.parquet"
    pd.DataFrame(prompts).to_parquet(parquet)
    assert load_prompts(str(parquet)) == prompts
    assert load_prompts("instructions:heldout", max_prompts=10) == prompts


def test_load_prompts_reads_alpaca_eval_and_arena_hard_files(tmp_path):
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Say hi.", "dataset": "helpful_base"}]))
    assert load_prompts(str(alpaca)) == [{"id": "0", "prompt": "Say hi.", "dataset": "helpful_base"}]
    arena = tmp_path / "question.jsonl"
    arena.write_text(json.dumps({"question_id": "q1", "turns": [{"content": "Why?"}]}) + "\n")
    assert load_prompts(str(arena)) == [{"id": "q1", "prompt": "Why?"}]
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}))
    assert load_prompts(str(chat))[0]["prompt"] == "u"


def test_load_prompts_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompts(str(tmp_path / "missing.jsonl"))
    no_column = tmp_path / "q.jsonl"
    no_column.write_text(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(ValueError, match="Set `prompt_column`"):
        load_prompts(str(no_column))
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(ValueError, match="verifier scorer needs them"):
        load_prompts(str(plain), require_constraints=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "constraints": [{"type": "nope"}]}) + "\n")
    with pytest.raises(ValueError, match="Unknown constraint type 'nope'"):
        load_prompts(str(bad))


def test_instruction_accuracy_prompt_and_constraint_level():
    prompts = [
        {"prompt": "a", "constraints": [{"type": "all_lowercase"}, {"type": "no_commas"}]},
        {"prompt": "b", "constraints": [{"type": "title"}]},
        {"prompt": "c", "constraints": [{"type": "all_uppercase"}, {"type": "no_commas"}, {"type": "title"}]},
    ]
    responses = ["fine, thanks", "<<t>> ok", "LOUD <<T>>"]
    result = instruction_accuracy(prompts, responses)
    assert result["prompt_level_accuracy"] == pytest.approx(2 / 3)  # prompts b and c meet everything
    assert result["constraint_level_accuracy"] == pytest.approx(5 / 6)  # 1 + 1 + 3 of 2 + 1 + 3
    assert result["scores"] == [0.5, 1.0, 1.0]


def test_win_loss_tie_and_exact_sign_test():
    record = win_loss_tie([1.0, 0.5, 0.0, 0.5], [0.0, 0.5, 1.0, 0.0])
    # 2 wins, 1 loss, 1 tie: p = 2 * P[Bin(3, 1/2) <= 1] = 2 * (1 + 3) / 8, capped at 1
    assert record == {"wins": 2, "losses": 1, "ties": 1, "sign_test_p": 1.0}
    # the quality benchmark's DPO-vs-base split: 13 wins, 7 losses, 60 ties
    scores, base = [1.0] * 13 + [0.0] * 7 + [0.5] * 60, [0.5] * 13 + [0.5] * 7 + [0.5] * 60
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
