"""Load prompts from the built-in set, a local .jsonl/.json/.parquet file, or a Hub dataset, into plain dicts
`{"id", "prompt", "constraints"?, "dataset"?}`.

The prompt column may hold a string (`prompt`, AlpacaEval's `instruction`), a list of chat messages (TRL's
conversational `prompt`; the last user message is used) or Arena-Hard's `turns` (`[{"content": ...}]`; the first
turn is used, later turns are ignored).
"""

import json
from pathlib import Path
from typing import Any

from adadpo.evaluation.instructions.prompt_set import load_instruction_prompts, validate_prompt


BUILTIN_PREFIX = "instructions:"
PROMPT_COLUMN_CANDIDATES = ("prompt", "instruction", "turns")
ID_COLUMN_CANDIDATES = ("id", "question_id", "uid")
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


def _read_rows(source: str, hub_split: str) -> list[dict[str, Any]]:
    path = Path(source)
    if path.suffix in LOCAL_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"Prompt file {source!r} does not exist.")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

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
    import datasets

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


def _clean_constraints(value: Any) -> Any:
    """Arrow-backed files unify struct fields, filling absent parameters with None; drop those again."""
    if isinstance(value, list):
        return [{k: v for k, v in c.items() if v is not None} if isinstance(c, dict) else c for c in value]
    return value


def load_prompts(
    source: str,
    *,
    prompt_column: str | None = None,
    hub_split: str = "train",
    require_constraints: bool = False,
    max_prompts: int | None = None,
) -> list[dict[str, Any]]:
    """Prompts from `instructions:<train|heldout|all>`, a local file, or a Hub dataset id; validated up front."""
    if source.startswith(BUILTIN_PREFIX):
        rows = load_instruction_prompts(source[len(BUILTIN_PREFIX) :])
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
        prompt = {"id": str(row[id_column]) if id_column else str(index)}
        prompt["prompt"] = _as_text(row[column], f"{source} row {index}")
        if row.get("constraints") is not None:
            prompt["constraints"] = _clean_constraints(row["constraints"])
        for extra in ("split", "dataset"):
            if row.get(extra) is not None:
                prompt[extra] = row[extra]
        validate_prompt(prompt, require_constraints)
        prompts.append(prompt)
    return prompts


def write_prompts_jsonl(prompts: list[dict[str, Any]], path: str | Path) -> Path:
    """Export prompts (e.g. the built-in set) as jsonl, to edit or to share."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    return path
