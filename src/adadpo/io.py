"""Writing what a user keeps (results, configs, caches, model cards): atomically, and never with a token in it.

The content goes to a temporary file beside the target, is flushed and fsynced, and is then renamed over the
target in one step: a crash leaves the old file or the new one, never half of either.
"""

import json
import os
import re
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


_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{10,}")


def redact(text: str, secrets=()) -> str:
    """Remove anything that looks like a Hugging Face token, and the given secret values, from text that will be
    logged or written."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _TOKEN_PATTERN.sub("hf_***", text)
