"""Preference data: load Hub ids and local files (alone or as a mixture), map columns, extract implicit prompts,
validate, and split. Every problem is reported with the dataset and column it concerns, before training starts."""

import logging
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, concatenate_datasets
from trl.data_utils import extract_prompt, is_conversational


logger = logging.getLogger(__name__)

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
REQUIRED_COLUMNS = ("chosen", "rejected")
PROMPT_ROLES = {"system", "user", "assistant", "tool"}


def load_one(path: str, name: str | None = None, split: str = "train", data_files: Any = None) -> Dataset:
    """A Hub id, a local .jsonl/.json/.parquet/.csv file, or a `save_to_disk` folder, as one `Dataset` split."""
    local = Path(path)
    if local.suffix in LOCAL_FORMATS:
        if not local.is_file():
            raise FileNotFoundError(f"Dataset file {path!r} does not exist (resolved to {local.resolve()}).")
        try:
            return datasets.load_dataset(LOCAL_FORMATS[local.suffix], data_files=str(local), split="train")
        except Exception as error:  # datasets' errors for an empty or inconsistent file name no file
            raise ValueError(
                f"Dataset file {path!r} is empty or malformed ({type(error).__name__}: {error}). Each row must be one "
                "record with the same columns, each column of one type (all strings, or all lists of messages)."
            ) from None
    if local.is_dir() and ((local / "dataset_info.json").exists() or (local / "dataset_dict.json").exists()):
        loaded = datasets.load_from_disk(str(local))
        if isinstance(loaded, DatasetDict):
            if split not in loaded:
                raise ValueError(f"Dataset folder {path!r} has splits {list(loaded)}, not {split!r}.")
            return loaded[split]
        return loaded
    return datasets.load_dataset(path, name=name, data_files=data_files, split=split)


def load_raw_datasets(script_args, seed: int = 42) -> DatasetDict:
    """Train (and optional test) splits from `dataset_mixture` or `dataset_name`, before any validation.

    A held-out split (`test_split_size`) is drawn with the mixture's own `seed` where given, else with `seed` (the
    run's `seed`), so `--seed` changes the split and every process draws the same one."""
    splits: dict[str, Dataset] = {}
    if script_args.dataset_mixture is not None:
        mixture = script_args.dataset_mixture
        entries = mixture.get("datasets") if isinstance(mixture, dict) else None
        if not entries:
            raise ValueError("`dataset_mixture` needs a non-empty `datasets:` list of {path, split?, weight?, ...}.")
        parts = []
        for entry in entries:
            if "path" not in entry:
                raise ValueError(f"Each `dataset_mixture.datasets` entry needs a `path`; got {entry}.")
            ds = load_one(entry["path"], entry.get("name"), entry.get("split", "train"), entry.get("data_files"))
            if entry.get("columns"):
                ds = ds.select_columns(entry["columns"])
            weight = float(entry.get("weight", 1.0))
            if not 0 < weight <= 1:
                raise ValueError(f"`weight` of {entry['path']} must be in (0, 1], got {weight}.")
            parts.append(ds.select(range(int(round(weight * len(ds))))))
        splits["train"] = concatenate_datasets(parts)
        test_size = mixture.get("test_split_size", script_args.test_split_size)
        seed = int(mixture.get("seed", seed))
    else:
        splits["train"] = load_one(
            script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split
        )
        test_size = script_args.test_split_size
        if test_size is None and not Path(script_args.dataset_name).suffix:
            try:
                splits["test"] = load_one(
                    script_args.dataset_name, script_args.dataset_config, script_args.dataset_test_split
                )
            except (ValueError, KeyError, FileNotFoundError):
                logger.info(
                    "No `%s` split in %s: training without eval.",
                    script_args.dataset_test_split,
                    script_args.dataset_name,
                )
    if test_size is not None:
        test_size = int(test_size) if test_size >= 1 else float(test_size)
        split = splits["train"].train_test_split(test_size=test_size, seed=seed, shuffle=True)
        splits = {"train": split["train"], "test": split["test"]}
    return DatasetDict(splits)


def dataset_names(script_args) -> list[str]:
    """The datasets a recipe trains on, as the model card and error messages name them."""
    if script_args.dataset_mixture is not None:
        return [str(entry.get("path", "?")) for entry in script_args.dataset_mixture["datasets"]]
    return [str(script_args.dataset_name)]


def _source_name(script_args) -> str:
    names = ", ".join(dataset_names(script_args))
    return f"dataset_mixture({names})" if script_args.dataset_mixture is not None else names


def _completion_text(value) -> str:
    if isinstance(value, str):
        return value
    return "".join(str(m.get("content") or "") for m in value if isinstance(m, dict))


def row_format(example: dict, columns, source: str, index: int) -> str:
    """Returns "conversational" (every column a message list) or "text" (every column a string); anything else is an
    error naming the row, raised here rather than as a TypeError/IndexError from deep inside TRL or a template."""
    kinds = {column: type(example[column]).__name__ for column in columns}
    if set(kinds.values()) == {"list"}:
        return "conversational"
    if set(kinds.values()) == {"str"}:
        return "text"
    raise ValueError(
        f"{source} row {index}: {', '.join(f'`{c}`' for c in columns)} must all be strings or all lists of "
        f"{{role, content}} messages; got {kinds}."
    )


def _extract_prompt(example: dict) -> dict:
    """TRL's `extract_prompt`, which fails on an empty completion: such a pair keeps an empty prompt (and is then
    dropped as empty)."""
    if not example["chosen"] or not example["rejected"]:
        return {"prompt": example["chosen"][:0]}
    return extract_prompt(example)


def check_messages(example: dict, source: str, index: int) -> None:
    """Conversational rows: the prompt is a list of {role, content} turns, completions are assistant turns."""
    for key in ("prompt", "chosen", "rejected"):
        messages = example[key]
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise ValueError(f"{source} row {index}: `{key}` must be a list of {{role, content}} messages.")
        for m in messages:
            content_ok = isinstance(m.get("content"), str) or (m.get("content") is None and m.get("tool_calls"))
            if m["role"] not in PROMPT_ROLES or not content_ok:
                raise ValueError(
                    f"{source} row {index}: `{key}` has a message with role {m['role']!r} / content of type "
                    f"{type(m.get('content')).__name__}; roles must be one of {sorted(PROMPT_ROLES)} with text content."
                )
    prompt = example["prompt"]
    if prompt and prompt[-1]["role"] == "assistant":
        raise ValueError(
            f"{source} row {index}: the prompt ends with an assistant turn; the last prompt turn must be the user's "
            "(or system/tool) message that the chosen/rejected assistant replies answer."
        )
    for key in ("chosen", "rejected"):
        if example[key] and example[key][0]["role"] != "assistant":
            raise ValueError(
                f"{source} row {index}: `{key}` must start with an assistant message, found {example[key][0]['role']!r}."
            )


def validate_preferences(dataset: Dataset, source: str, max_drop_fraction: float, split: str = "train") -> Dataset:
    """Check columns and message structure; drop empty and identical pairs with a count; error past the threshold."""
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{source} ({split}) has no {missing} column(s); found {dataset.column_names}. Map yours with "
            "`column_mapping` in the recipe, e.g. {text_chosen: chosen, text_rejected: rejected}."
        )
    if len(dataset) == 0:
        raise ValueError(f"{source} ({split}) is empty.")
    if "prompt" not in dataset.column_names:  # HH-RLHF style: the prompt is the shared start of both
        for index, example in enumerate(dataset):  # TRL's extract_prompt assumes well-typed rows
            row_format(example, ("chosen", "rejected"), source, index)
        dataset = dataset.map(_extract_prompt, desc=f"Extracting implicit prompts ({split})")
    for index, example in enumerate(dataset):
        if row_format(example, ("prompt", "chosen", "rejected"), source, index) == "conversational":
            check_messages(example, source, index)

    def keep(example):
        chosen, rejected = _completion_text(example["chosen"]), _completion_text(example["rejected"])
        prompt_ok = not isinstance(example["prompt"], list) or len(example["prompt"]) > 0
        return prompt_ok and bool(chosen.strip()) and bool(rejected.strip()) and chosen != rejected

    kept = dataset.filter(keep, desc=f"Dropping empty/identical pairs ({split})")
    reason = "empty or identical completions, or an empty prompt message list"
    check_drop_fraction(len(dataset), len(kept), source, split, reason, max_drop_fraction)
    return kept


def check_drop_fraction(before: int, after: int, source: str, split: str, reason: str, max_fraction: float) -> None:
    dropped = before - after
    if dropped:
        logger.warning("%s (%s): dropped %d of %d rows (%s).", source, split, dropped, before, reason)
    if after == 0:
        raise ValueError(f"{source} ({split}) is empty after dropping {dropped} rows ({reason}).")
    if dropped / before > max_fraction:
        raise ValueError(
            f"{source} ({split}): {dropped} of {before} rows ({dropped / before:.0%}) dropped ({reason}), more than "
            f"`max_drop_fraction` = {max_fraction}. Fix the data (or `max_length`), or raise `max_drop_fraction`."
        )


def get_preference_datasets(
    script_args, tokenizer=None, seed: int = 42, needs_reward_margin: bool = False
) -> DatasetDict:
    """Load, rename, validate and cap the train/test splits the recipe names; `seed` (the run's) draws the split.
    `needs_reward_margin` (MADPO): derive `reward_margin` from reward-model scores where the data has only those."""
    raw = load_raw_datasets(script_args, seed)
    source = _source_name(script_args)
    out = {}
    for split, dataset in raw.items():
        if script_args.column_mapping:
            absent = [c for c in script_args.column_mapping if c not in dataset.column_names]
            if absent:
                raise ValueError(f"`column_mapping` names {absent}, not columns of {source}: {dataset.column_names}.")
            dataset = dataset.rename_columns(dict(script_args.column_mapping))
        limit = script_args.max_train_samples if split == "train" else script_args.max_eval_samples
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        dataset = validate_preferences(dataset, source, script_args.max_drop_fraction, split)
        if tokenizer is not None and is_conversational(dataset[0]) and tokenizer.chat_template is None:
            raise ValueError(
                f"{source} is conversational but the tokenizer has no chat template. Set `chat_template` in the "
                "recipe (a Jinja template string), or use a tokenizer that ships one."
            )
        if needs_reward_margin:
            dataset = add_reward_margin(dataset)
        keep_cols = {"prompt", "chosen", "rejected", "reward_margin", "score_chosen", "score_rejected"}
        dataset = dataset.remove_columns([c for c in dataset.column_names if c not in keep_cols])
        out[split] = dataset
    return DatasetDict(out)


def add_reward_margin(dataset: Dataset) -> Dataset:
    """MADPO reads `reward_margin`; derive it from `score_chosen - score_rejected` when only those exist."""
    if "reward_margin" in dataset.column_names:
        return dataset
    if {"score_chosen", "score_rejected"} <= set(dataset.column_names):
        return dataset.map(lambda r: {"reward_margin": float(r["score_chosen"]) - float(r["score_rejected"])})
    raise ValueError(
        "`madpo` needs a per-pair reward margin: add a `reward_margin` column, or `score_chosen` and `score_rejected` "
        f"columns (e.g. reward-model scores). Found columns {dataset.column_names}."
    )


def check_tokenized(before: int, tokenized: Dataset, split: str, bos_token_id, max_length, max_drop_fraction: float):
    """After TRL's tokenization (which drops rows whose prompt fills `max_length`): count what it dropped against
    `max_drop_fraction`, and keep one BOS where a chat template and the tokenizer both add one."""
    if "prompt_ids" not in tokenized.column_names:
        return tokenized
    reason = f"prompt of >= max_length={max_length} tokens"
    check_drop_fraction(before, len(tokenized), "the tokenized data", split, reason, max_drop_fraction)
    return drop_double_bos(tokenized, bos_token_id)


def drop_double_bos(dataset, bos_token_id):
    """Templates that already start with BOS, tokenized with add_special_tokens, give two (the Llama-3 pitfall)."""
    if bos_token_id is None or len(dataset) == 0:
        return dataset

    def has_double(example):
        ids = example["prompt_ids"]
        return len(ids) >= 2 and ids[0] == bos_token_id and ids[1] == bos_token_id

    doubled = sum(has_double(example) for example in dataset.select(range(min(len(dataset), 64))))
    if doubled == 0:
        return dataset
    logger.warning("Prompts start with two BOS tokens (template + tokenizer); keeping one.")
    return dataset.map(lambda ex: {"prompt_ids": ex["prompt_ids"][1:]} if has_double(ex) else {})
