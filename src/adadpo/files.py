"""Writing what a user keeps (results, configs, caches, model cards, checkpoints): atomically, and never with a
token in it.

A file's content goes to a temporary file beside the target, is flushed and fsynced, and is then renamed over the
target in one step; a folder is written complete under a staging name and then published the same way. A crash
leaves the old file or folder or the new one, never half of either.
"""

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomic(path: str | Path, write: Callable[[IO], Any], binary: bool = False) -> Path:
    """Call `write(file)` on a temporary file, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text))


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    return write_atomic(path, lambda f: json.dump(payload, f, indent=2, default=str))


def write_jsonl_atomic(path: str | Path, rows) -> Path:
    """One JSON object per line (datasets, answers, prompts)."""
    return write_atomic(path, lambda f: f.writelines(json.dumps(row) + "\n" for row in rows))


def publish_dir(staged: str | Path, final: str | Path) -> Path:
    """Move the complete folder `staged` to `final` by renames only. An existing `final` (a rerun reaching the same
    checkpoint, a re-prepared model) is first renamed aside and deleted only once the new folder is in place, so a
    crash leaves one complete folder at `final`, or the old one beside it."""
    staged, final = Path(staged), Path(final)
    if not final.exists():
        os.replace(staged, final)
        return final
    aside = final.with_name(f"{final.name}.replaced")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(final, aside)
    os.replace(staged, final)
    shutil.rmtree(aside)
    return final


_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{10,}")


def redact(text: str, secrets=()) -> str:
    """Remove anything that looks like a Hugging Face token, and the given secret values, from text that will be
    logged or written."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _TOKEN_PATTERN.sub("hf_***", text)
