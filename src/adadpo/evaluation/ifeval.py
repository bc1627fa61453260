"""IFEval (Zhou et al., 2023, arXiv:2311.07911): the 541 prompts of `google/IFEval`, scored with EleutherAI
lm-evaluation-harness's IFEval task modules (`lm_eval.tasks.ifeval`, Google's checkers as the harness ships them),
not with code of our own. Install with `pip install -e ".[eval]"`.

- `load_ifeval(source, part)`: the rows (`key`, `prompt`, `instruction_id_list`, `kwargs`) from a local .jsonl
  (e.g. `../shared/data/ifeval_input_data.jsonl`) or the Hub id `google/IFEval`; `part` is `all`, `train` or
  `heldout` (the fixed split by key below).
- `score_ifeval(rows, responses)`: the four standard numbers, prompt-level strict / loose and instruction-level
  strict / loose, computed per prompt by lm-eval's own `test_instruction_following_strict` / `_loose` (the functions
  its `process_results` calls), aggregated as its metric list does (mean over prompts; instruction level pooled).
- Two checker types (`length_constraints:number_sentences`, `change_case:capital_word_frequency`) need NLTK's punkt
  model. Without it (an offline machine: `python -m nltk.downloader punkt punkt_tab` fixes it elsewhere) the prompts
  using them are left unscored, counted and named with the reason; nothing is guessed for them. The set is found by
  running every checker of every prompt once on a probe text, so it never depends on a model's responses and every
  model is scored on the same prompts.

**Split (not the leaderboard protocol).** For on-policy pair generation a prompt is in the held-out half iff
sha256("ifeval-split:<key>") is odd: 275 train / 266 held-out prompts, both covering all 25 instruction types. Train
on `train`, report on `heldout`; numbers on the held-out half are not comparable with published IFEval scores, which
use all 541 prompts (`part="all"`).
"""

import contextlib
import hashlib
import io
import json
import logging
import random
from functools import cache
from pathlib import Path
from typing import Any

import datasets


logger = logging.getLogger(__name__)

IFEVAL_HUB_ID = "google/IFEval"
PARTS = ("all", "train", "heldout")
SPLIT_SALT = "ifeval-split:"
COLUMNS = ("key", "prompt", "instruction_id_list", "kwargs")
METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")
PROBE = "Hello world. This is a TEST sentence, written as a probe.\n\nP.S. Done"
INSTALL_HINT = (
    'IFEval needs the optional extra: pip install -e ".[eval]" (lm-eval with langdetect, immutabledict, nltk).'
)


@cache
def _lm_eval_ifeval():
    """lm-eval's IFEval modules, imported once. Its import tries to download NLTK's punkt_tab when missing; that
    download is switched off here (nothing is fetched at run time): the checkers that need it are found by the probe."""
    try:
        import langdetect
        import nltk
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from None
    download = nltk.download
    nltk.download = lambda *args, **kwargs: False
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Downloaded punkt_tab" even when it did not
            from lm_eval.tasks.ifeval import instructions_registry, utils
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from None
    finally:
        nltk.download = download
    # `language:response_language` and the two case checkers call langdetect, which samples at random unless seeded;
    # a fixed seed makes a score a function of the response (the same seed for our path and any reference call).
    langdetect.DetectorFactory.seed = 0
    return instructions_registry, utils


def is_heldout(key: int | str) -> bool:
    return int(hashlib.sha256(f"{SPLIT_SALT}{key}".encode()).hexdigest(), 16) % 2 == 1


def _read(source: str | Path) -> list[dict[str, Any]]:
    path = Path(source)
    if path.suffix in (".jsonl", ".json"):
        if not path.is_file():
            raise FileNotFoundError(f"IFEval file {str(source)!r} does not exist.")
        text = path.read_text()
        return json.loads(text) if path.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]

    return list(datasets.load_dataset(str(source), split="train"))


def load_ifeval(source: str | Path = IFEVAL_HUB_ID, part: str = "all") -> list[dict[str, Any]]:
    """IFEval rows from a local .jsonl/.json or a Hub id, validated against lm-eval's instruction registry."""
    if part not in PARTS:
        raise ValueError(f"Unknown IFEval part {part!r}; use one of {PARTS}.")
    rows = _read(source)
    validate_ifeval_rows(rows, str(source))
    if len({row["key"] for row in rows}) != len(rows):
        raise ValueError(f"{source} has repeated keys.")
    if part != "all":
        rows = [row for row in rows if is_heldout(row["key"]) == (part == "heldout")]
    return [{c: row[c] for c in COLUMNS} for row in rows]


def validate_ifeval_rows(rows: list[dict[str, Any]], where: str) -> None:
    """Each row has IFEval's columns, one kwargs dict per instruction, and instructions lm-eval knows."""
    registry, _ = _lm_eval_ifeval()
    for index, row in enumerate(rows):
        missing = [c for c in COLUMNS if row.get(c) is None]
        if missing:
            raise ValueError(f"{where} row {index} lacks {missing}: IFEval rows have {COLUMNS}.")
        ids, kwargs = row["instruction_id_list"], row["kwargs"]
        unknown = [i for i in ids if i not in registry.INSTRUCTION_DICT]
        if unknown or not ids or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
            raise ValueError(
                f"{where} key {row['key']}: needs known instructions (unknown: {unknown}) and one kwargs dict per "
                f"instruction, got {ids} and {kwargs}."
            )


def _example(row: dict[str, Any]):
    _, utils = _lm_eval_ifeval()
    return utils.InputExample(row["key"], row["instruction_id_list"], row["prompt"], row["kwargs"])


def unscorable(rows: list[dict[str, Any]]) -> dict[Any, list[str]]:
    """key -> the instruction ids that cannot be checked here (NLTK's punkt model missing), for each prompt with
    any: every checker of every prompt is built as lm-eval builds it and run once on a probe text."""
    _, utils = _lm_eval_ifeval()
    missing = {}
    for row in rows:
        needs = []
        for instruction_id, kwargs in zip(row["instruction_id_list"], row["kwargs"], strict=True):
            single = {**row, "instruction_id_list": [instruction_id], "kwargs": [kwargs]}
            try:
                utils.test_instruction_following_strict(_example(single), PROBE)
            except LookupError:  # nltk.data: "Resource punkt_tab not found"
                needs.append(instruction_id)
        if needs:
            missing[row["key"]] = needs
    return missing


def describe_unscored(skip: dict[Any, list[str]]) -> str | None:
    if not skip:
        return None
    counts = {}
    for needs in skip.values():
        for instruction_id in set(needs):
            counts[instruction_id] = counts.get(instruction_id, 0) + 1
    uses = ", ".join(f"{name} ({n} prompts)" for name, n in sorted(counts.items()))
    return (
        f"{len(skip)} prompts not scored: NLTK's punkt model is not installed, and their checkers need it: {uses}. "
        "Install it with `python -m nltk.downloader punkt punkt_tab` to score all prompts."
    )


def seed_checkers(key) -> None:
    """Seed Python's `random` with the prompt's key. A checker given an unusable parameter draws one at random: key
    1122 asks for the letter '#', which Google's `LetterFrequencyChecker` (and lm-eval's copy) replaces with a random
    letter, so without a seed that prompt's score depends on whatever ran before. Seeded per prompt, a response
    always gets the same score; the cross-check seeds lm-eval's `process_results` the same way."""
    random.seed(int(key))


def score_ifeval(rows: list[dict[str, Any]], responses: list[str], skip: dict | None = None) -> dict[str, Any]:
    """The four IFEval accuracies over the scorable prompts, plus per-prompt results (`None` for unscored ones).

    `skip` (key -> instruction ids, default `unscorable(rows)`) lets several models share one probe."""
    if len(rows) != len(responses):
        raise ValueError(f"Got {len(rows)} IFEval prompts but {len(responses)} responses.")
    if not rows:
        raise ValueError("score_ifeval needs at least one prompt.")
    state = random.getstate()  # the checkers (and langdetect) reseed Python's random: give the caller its own back
    try:
        return _score(rows, responses, skip)
    finally:
        random.setstate(state)


def _score(rows: list[dict[str, Any]], responses: list[str], skip: dict | None) -> dict[str, Any]:
    _, utils = _lm_eval_ifeval()
    skip = unscorable(rows) if skip is None else skip
    per_prompt = []
    for row, response in zip(rows, responses, strict=True):
        if row["key"] in skip:
            per_prompt.append(None)
            continue
        seed_checkers(row["key"])
        strict = utils.test_instruction_following_strict(_example(row), response)
        loose = utils.test_instruction_following_loose(_example(row), response)
        per_prompt.append(
            {
                "prompt_level_strict_acc": strict.follow_all_instructions,
                "inst_level_strict_acc": list(strict.follow_instruction_list),
                "prompt_level_loose_acc": loose.follow_all_instructions,
                "inst_level_loose_acc": list(loose.follow_instruction_list),
            }
        )
    scored = [p for p in per_prompt if p is not None]
    if not scored:
        raise ValueError(f"None of the {len(rows)} IFEval prompts can be scored here: {sorted(set(skip.values()))}.")
    result = {}
    for metric in METRICS:
        if metric.startswith("prompt"):  # lm-eval: `mean` over prompts
            result[metric] = sum(p[metric] for p in scored) / len(scored)
        else:  # lm-eval's agg_inst_level_acc: every instruction of every prompt pooled
            flat = [x for p in scored for x in p[metric]]
            result[metric] = sum(flat) / len(flat)
    result |= {
        "num_prompts": len(rows),
        "num_scored": len(scored),
        "num_unscored": len(rows) - len(scored),
        "unscored_reason": describe_unscored({key: skip[key] for key in (row["key"] for row in rows) if key in skip}),
        "per_prompt": per_prompt,
    }
    return result


def prompt_scores(per_prompt: list[dict | None]) -> list[float | None]:
    """Per prompt: the fraction of its instructions followed (strict), the ranking score for pair generation and
    for the win rate against the base model; None where unscored."""
    return [
        None if p is None else sum(p["inst_level_strict_acc"]) / len(p["inst_level_strict_acc"]) for p in per_prompt
    ]
