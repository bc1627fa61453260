"""Preference data: load Hub ids and local files (alone or as a mixture), map columns, split, and validate (with
`adadpo.data_checks`). Every problem is reported with the dataset and column it concerns, before training starts."""

import logging
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, concatenate_datasets
from trl.data_utils import is_conversational

from adadpo.data_checks import validate_preferences


logger = logging.getLogger(__name__)

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


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


def mixture_entries(mixture) -> list[dict]:
    """`dataset_mixture.datasets` in one spelling: ours (`path`, `name`) or alignment-handbook's (`id`, `config`)."""
    entries = mixture.get("datasets") if isinstance(mixture, dict) else None
    if not entries:
        raise ValueError(
            "`dataset_mixture` needs a non-empty `datasets:` list of {id (or path), config?, split?, columns?, weight?}."
        )
    normalized = []
    for entry in entries:
        source = entry.get("path", entry.get("id"))
        if source is None or ("path" in entry and "id" in entry):
            raise ValueError(
                f"Each `dataset_mixture.datasets` entry names its dataset once, as `id` or `path`; got {entry}."
            )
        if "name" in entry and "config" in entry:
            raise ValueError(f"Give a dataset's configuration once, as `config` or `name`; got {entry}.")
        normalized.append({**entry, "path": source, "name": entry.get("name", entry.get("config"))})
    return normalized


def mixture_seed(mixture, run_seed: int) -> int:
    """The mixture's `seed`; unset, alignment-handbook's default 0 for its format (entries with `id`), else the
    run's `seed` (so `--seed` changes a mixture written in ours)."""
    if "seed" in mixture:
        return int(mixture["seed"])
    return 0 if any("id" in entry for entry in mixture["datasets"]) else run_seed


def load_mixture(mixture, seed: int) -> Dataset:
    """Each dataset's `columns`, a `weight` fraction of its rows drawn after shuffling with the mixture's seed (not
    its first rows: sorted data would bias them), concatenated and shuffled again, as alignment-handbook does."""
    parts = []
    for entry in mixture_entries(mixture):
        ds = load_one(entry["path"], entry["name"], entry.get("split", "train"), entry.get("data_files"))
        if entry.get("columns"):
            ds = ds.select_columns(entry["columns"])
        weight = float(entry.get("weight", 1.0))
        if not 0 < weight <= 1:
            raise ValueError(f"`weight` of {entry['path']} must be in (0, 1], got {weight}.")
        parts.append(ds.shuffle(seed=seed).select(range(int(len(ds) * weight))))
    columns = [sorted(part.column_names) for part in parts]
    if any(c != columns[0] for c in columns):
        raise ValueError(
            f"The datasets of `dataset_mixture` have different columns {columns}: give each the same `columns:` list."
        )
    return concatenate_datasets(parts).shuffle(seed=seed)


def load_raw_datasets(script_args, seed: int = 42) -> DatasetDict:
    """Train (and optional test) splits from `dataset_mixture` or `dataset_name`, before any validation.

    A held-out split (`test_split_size`) is drawn with the mixture's seed (`mixture_seed`), or the run's `seed`
    for `dataset_name`, so `--seed` changes the split and every process draws the same one."""
    splits: dict[str, Dataset] = {}
    if script_args.dataset_mixture is not None:
        mixture = script_args.dataset_mixture
        mixture_entries(mixture)  # every entry well-formed before anything is loaded
        seed = mixture_seed(mixture, seed)
        splits["train"] = load_mixture(mixture, seed)
        test_size = mixture.get("test_split_size", script_args.test_split_size)
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
        return [str(entry["path"]) for entry in mixture_entries(script_args.dataset_mixture)]
    return [str(script_args.dataset_name)]


def _source_name(script_args) -> str:
    names = ", ".join(dataset_names(script_args))
    return f"dataset_mixture({names})" if script_args.dataset_mixture is not None else names


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
        # `chat_template_kwargs` (e.g. SmolLM3's enable_thinking) and `tools` are read by TRL per row
        keep_cols = {"prompt", "chosen", "rejected", "reward_margin", "score_chosen", "score_rejected"}
        keep_cols |= {"chat_template_kwargs", "tools"}
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
