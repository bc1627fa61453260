"""Bad input through the real `scripts/run_adadpo.py`: a clear error that names the problem and the fix, raised
before the run folder gets a single file. (Messages of the data and config checks themselves are tested in
test_data.py and test_configs.py; here: that the whole script stops in time, and the cases only it can see.)"""

import shutil
from types import SimpleNamespace

import pytest
import yaml

from adadpo.data import get_preference_datasets
from adadpo.files import write_jsonl_atomic
from adadpo.testing import CHATML_TEMPLATE, make_preference_rows
from tests.helpers.runs import preference_rows_with_margin, tiny_run_args, train


def files_under(folder) -> list:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def rows_with_long_prompts(n_rows: int, n_long: int):
    """`n_long` rows whose prompt alone is far longer than max_length=64 tokens."""
    rows = preference_rows_with_margin(n_rows, seed=5)
    for row in rows[:n_long]:
        row["prompt"][0]["content"] = " ".join(["mountain river"] * 80) + "?"
    return rows


def _wrong_roles(path):
    rows = preference_rows_with_margin(16)
    rows[7]["chosen"][0]["role"] = "user"
    return write_jsonl_atomic(path, rows)


def _missing_columns(path):
    return write_jsonl_atomic(path, [{"prompt": "q", "good": "a", "bad": "b"}] * 4)


def _long_prompts(path):
    return write_jsonl_atomic(path, rows_with_long_prompts(32, n_long=20))


def _unknown_key_recipe(path):
    path.write_text(yaml.safe_dump({"gamma": 0.5}))
    return path


# case id -> (overrides, data builder or None for the shared data, expected error, message pattern)
BAD_INPUTS = {
    "model_path_missing": (
        {"model_name_or_path": "./no/such/model"}, None, FileNotFoundError,
        r"Model folder './no/such/model' does not exist\. Fix `model_name_or_path`",
    ),
    "unknown_loss_type": ({"loss_type": "adpo"}, None, ValueError, r"unknown loss 'adpo' \(`loss_type`\); registered losses are: .*adadpo"),
    "global_batch_not_divisible": (
        {"global_batch_size": 5}, None, ValueError, r"`global_batch_size` \(5\) must be a positive multiple",
    ),
    "beta_not_positive": ({"beta": 0.0}, None, ValueError, "beta"),
    "unknown_recipe_key": ({}, "recipe", ValueError, r"`gamma`: use `simpo_gamma`"),
    "missing_columns": ({}, _missing_columns, ValueError, r"no \['chosen', 'rejected'\] column\(s\); found .*good"),
    "wrong_roles": ({}, _wrong_roles, ValueError, r"row 7: `chosen` must start with an assistant message"),
    "prompts_longer_than_max_length": (
        {"max_length": 64}, _long_prompts, ValueError,
        r"20 of 32 rows \(62%\) dropped \(prompt of >= max_length=64 tokens\), more than `max_drop_fraction` = 0\.5",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_before_anything_is_written(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, case):
    overrides, build_data, error, pattern = BAD_INPUTS[case]
    out = tmp_path / "out"
    data = pref_jsonl
    argv_head = []
    if build_data == "recipe":
        argv_head = ["--config", str(_unknown_key_recipe(tmp_path / "recipe.yaml"))]
    elif build_data is not None:
        data = build_data(tmp_path / "data.jsonl")
    argv = argv_head + tiny_run_args(tiny_model_dir, data, out, **overrides)
    with pytest.raises(error, match=pattern):
        train(run_adadpo, argv)
    assert files_under(out) == []


def test_tokenizer_without_chat_template_names_the_recipe_key(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "no-template")
    (model_dir / "chat_template.jinja").unlink()
    out = tmp_path / "out"
    argv = tiny_run_args(model_dir, pref_jsonl, out, max_steps=1)
    with pytest.raises(
        ValueError, match=r"conversational but the tokenizer has no chat template\. Set `chat_template`"
    ):
        train(run_adadpo, argv)
    assert files_under(out) == []
    # The fix the message names works: the same run with `chat_template` set trains.
    trainer = train(run_adadpo, [*argv, f"--chat_template={CHATML_TEMPLATE}"])
    assert trainer.state.global_step == 1 and (out / "model.safetensors").exists()


def test_prompts_longer_than_max_length_are_dropped_with_a_count(run_adadpo, tiny_model_dir, tmp_path, caplog):
    data = write_jsonl_atomic(tmp_path / "data.jsonl", rows_with_long_prompts(32, n_long=4))
    argv = tiny_run_args(tiny_model_dir, data, tmp_path / "out", loss_type="simpo", max_steps=1, max_length=64)
    trainer = train(run_adadpo, argv)
    assert "dropped 4 of 32 rows (prompt of >= max_length=64 tokens)" in caplog.text
    assert len(trainer.train_dataset) == 28
    assert all(len(ids) < 64 for ids in trainer.train_dataset["prompt_ids"])


# ---- Rows that used to crash inside TRL / datasets (found by tests/test_fuzz.py) ---------------------------------


def _data_args(path, **overrides):
    base = dict(
        dataset_name=str(path), dataset_config=None, dataset_train_split="train", dataset_test_split="test",
        dataset_mixture=None, column_mapping=None, test_split_size=None, max_train_samples=None,
        max_eval_samples=None, max_drop_fraction=0.5, seed=0,
    )  # fmt: skip
    return SimpleNamespace(**{**base, **overrides})


def test_degenerate_rows_are_dropped_with_a_count_not_a_crash(tmp_path, caplog):
    implicit = make_preference_rows(6, implicit_prompt=True, conversational=False)
    implicit[0] = {"chosen": "", "rejected": "Q: why? A: no."}  # TRL's extract_prompt fails on an empty side
    out = get_preference_datasets(_data_args(write_jsonl_atomic(tmp_path / "implicit.jsonl", implicit)))
    assert len(out["train"]) == 5

    chat = make_preference_rows(6)
    chat[2]["prompt"] = []  # TRL's is_conversational indexes [0] of an empty list
    out = get_preference_datasets(_data_args(write_jsonl_atomic(tmp_path / "chat.jsonl", chat)))
    assert len(out["train"]) == 5
    assert "dropped 1 of 6 rows (empty or identical completions, or an empty prompt message list)" in caplog.text


@pytest.mark.parametrize(
    "rows, pattern",
    [
        ([], r"data\.jsonl' is empty or malformed"),
        ([{"prompt": "q", "chosen": 3, "rejected": "b"}], r"row 0: `prompt`, `chosen`, `rejected` must all be strings"),
        (
            [{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": None}],
              "rejected": [{"role": "assistant", "content": "b"}]}],
            r"row 0: `chosen` has a message with role 'assistant' / content of type NoneType",
        ),
    ],
    ids=["empty_file", "number_completion", "none_content"],
)  # fmt: skip
def test_malformed_rows_get_our_error_naming_the_row(tmp_path, rows, pattern):
    with pytest.raises(ValueError, match=pattern):
        get_preference_datasets(_data_args(write_jsonl_atomic(tmp_path / "data.jsonl", rows)))
