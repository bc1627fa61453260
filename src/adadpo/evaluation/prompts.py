"""Load prompts for generation and evaluation into plain dicts `{"id", "prompt", "ifeval"?, "dataset"?}`.

Sources: `ifeval:<all|train|heldout>` (IFEval's 541 prompts or one half of the fixed split, see `adadpo.evaluation.
ifeval`; read from `ifeval_data`, a local copy or the Hub id `google/IFEval`), a local .jsonl/.json/.parquet file,
or a Hub dataset id. A row that carries IFEval's `instruction_id_list` and `kwargs` (the IFEval file itself, or your
own prompts in its format) gets an `ifeval` entry, checked against lm-eval's instruction registry, so it can be
scored with IFEval's checkers.

The prompt column may hold a string (`prompt`, AlpacaEval's `instruction`), a list of chat messages (TRL's
conversational `prompt`; the last user message is used) or Arena-Hard's `turns` (`[{"content": ...}]`; the first
turn is used, later turns are ignored).
"""

import json
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq

from adadpo.evaluation.ifeval import IFEVAL_HUB_ID, load_ifeval, validate_ifeval_rows
from adadpo.files import write_jsonl_atomic


IFEVAL_PREFIX = "ifeval:"
PROMPT_COLUMN_CANDIDATES = ("prompt", "instruction", "turns")
ID_COLUMN_CANDIDATES = ("id", "key", "question_id", "uid")
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


def _read_rows(source: str, hub_split: str) -> list[dict[str, Any]]:
    path = Path(source)
    if path.suffix in LOCAL_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"Prompt file {source!r} does not exist.")
        if path.suffix == ".parquet":
            return pq.read_table(path).to_pylist()  # plain Python values: ints stay ints, nested lists stay lists
        text = path.read_text()
        if path.suffix == ".json":
            rows = json.loads(text)
            if not isinstance(rows, list):
                raise ValueError(f"{source}: a .json prompt file must hold a list of objects.")
            return rows
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if path.exists():
        raise ValueError(f"Prompt file {source!r} must end in one of {LOCAL_SUFFIXES}.")

    return list(datasets.load_dataset(source, split=hub_split))


def _as_text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        if all("role" in m for m in value):
            users = [m["content"] for m in value if m["role"] == "user"]
            if users:
                return users[-1]
        elif "content" in value[0]:
            return value[0]["content"]
    raise ValueError(f"{where}: cannot read a prompt from {value!r}; expected a string, chat messages or turns.")


def load_prompts(
    source: str,
    *,
    prompt_column: str | None = None,
    hub_split: str = "train",
    ifeval_data: str = IFEVAL_HUB_ID,
    require_ifeval: bool = False,
    max_prompts: int | None = None,
) -> list[dict[str, Any]]:
    """Prompts from `ifeval:<all|train|heldout>`, a local file, or a Hub dataset id; validated up front.

    `require_ifeval`: every row must carry IFEval instructions (the `ifeval` scorer ranks samples with them)."""
    if source.startswith(IFEVAL_PREFIX):
        rows = load_ifeval(ifeval_data, source[len(IFEVAL_PREFIX) :])
    else:
        rows = _read_rows(source, hub_split)
    if not rows:
        raise ValueError(f"Prompt source {source!r} holds no rows.")
    columns = set(rows[0])
    column = prompt_column or next((c for c in PROMPT_COLUMN_CANDIDATES if c in columns), None)
    if column is None or column not in columns:
        raise ValueError(
            f"Prompt source {source!r} has no prompt column (looked for {prompt_column or PROMPT_COLUMN_CANDIDATES}); "
            f"its columns are {sorted(columns)}. Set `prompt_column`."
        )
    id_column = next((c for c in ID_COLUMN_CANDIDATES if c in columns), None)
    prompts = []
    for index, row in enumerate(rows[:max_prompts] if max_prompts else rows):
        where = f"{source} row {index}"
        prompt = {"id": str(row[id_column]) if id_column else str(index)}
        prompt["prompt"] = _as_text(row[column], where)
        if not prompt["prompt"].strip():
            raise ValueError(f"{where}: the prompt is empty.")
        if "instruction_id_list" in row or "kwargs" in row:
            ifeval_row = {"key": row.get("key", index), "prompt": prompt["prompt"]}
            ifeval_row |= {"instruction_id_list": row.get("instruction_id_list"), "kwargs": row.get("kwargs")}
            validate_ifeval_rows([ifeval_row], where)
            prompt["ifeval"] = ifeval_row
        elif require_ifeval:
            raise ValueError(
                f"{where} has no IFEval instructions (`instruction_id_list`, `kwargs`): the ifeval scorer needs them. "
                "Use `prompts: ifeval:train`, rows in IFEval's format, or `scorer: reward_model`."
            )
        if row.get("dataset") is not None:
            prompt["dataset"] = row["dataset"]
        prompts.append(prompt)
    return prompts


def write_prompts_jsonl(prompts: list[dict[str, Any]], path: str | Path) -> Path:
    """Write prompts as jsonl (IFEval rows keep their instructions, so the file loads back the same)."""
    rows = []
    for prompt in prompts:
        row = {"id": prompt["id"], "prompt": prompt["prompt"]}
        if "ifeval" in prompt:
            row |= {k: prompt["ifeval"][k] for k in ("key", "instruction_id_list", "kwargs")}
        rows.append(row)
    return write_jsonl_atomic(path, rows)
