"""Checks on preference rows, before and after TRL tokenizes them: columns, message structure, implicit prompts,
empty or identical pairs, rows dropped for length, a doubled BOS. Each error names the dataset, split and row."""

import logging

from datasets import Dataset
from trl.data_utils import extract_prompt


logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("chosen", "rejected")
PROMPT_ROLES = {"system", "user", "assistant", "tool"}


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


def _user_turns(messages: list) -> list[str]:
    return [str(m.get("content") or "").strip() for m in messages if isinstance(m, dict) and m.get("role") == "user"]


def prompt_from_conversations(example: dict, index: int, source: str) -> dict:
    """A `prompt` string beside `chosen` / `rejected` conversations that already hold it (UltraFeedback-binarized,
    distilabel-capybara): the conversational prompt is the shared start of the two conversations, and the string
    must be one of its user turns (the first or the last); otherwise the row is refused, naming it."""
    shared = _extract_prompt({"chosen": example["chosen"], "rejected": example["rejected"]})
    users = _user_turns(shared["prompt"])
    if not users or example["prompt"].strip() not in (users[0], users[-1]):
        raise ValueError(
            f"{source} row {index}: the `prompt` string is not a user turn of the conversation `chosen` and "
            f"`rejected` share ({users[:1] + users[-1:] or 'none'}), so the two disagree on what was asked. "
            + (
                "Drop the `prompt` column (the shared start of the conversations is the prompt), or fix the row."
                if users
                else "The conversations hold no user turn: write the prompt as a user message, "
                "`prompt: [{role: user, content: ...}]`, and keep only the answers in `chosen` / `rejected`."
            )
        )
    return shared


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
    elif isinstance(dataset[0]["prompt"], str) and isinstance(dataset[0]["chosen"], list):
        for index, example in enumerate(dataset):
            row_format(example, ("chosen", "rejected"), source, index)
        dataset = dataset.map(
            lambda example, index: prompt_from_conversations(example, index, source),
            with_indices=True,
            desc=f"Taking the prompt from the conversations ({split})",
        )
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


def check_tokenized(
    before: int,
    tokenized: Dataset,
    split: str,
    bos_token_id,
    args,
    max_drop_fraction: float,
) -> Dataset:
    """After TRL's tokenization: keep one BOS where a chat template and the tokenizer both add one; cut each prompt to
    its last `max_prompt_length` tokens (the old TRL / alignment-handbook option); then drop the rows whose prompt
    still fills `max_length` under `keep_start` truncation (TRL's own filter, run after the cut so that a prompt the
    cut shortens is kept), and count the drops against `max_drop_fraction`."""
    if "prompt_ids" not in tokenized.column_names:
        return tokenized
    tokenized = drop_double_bos(tokenized, bos_token_id)
    if args.max_prompt_length is not None:
        tokenized = tokenized.map(
            lambda ex: {"prompt_ids": ex["prompt_ids"][-args.max_prompt_length :]},
            desc=f"Cutting prompts to their last {args.max_prompt_length} tokens ({split})",
        )
    if args.max_length is not None and args.truncation_mode == "keep_start":
        tokenized = tokenized.filter(lambda ex: len(ex["prompt_ids"]) < args.max_length)
    reason = f"prompt of >= max_length={args.max_length} tokens"
    check_drop_fraction(before, len(tokenized), "the tokenized data", split, reason, max_drop_fraction)
    return tokenized


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
