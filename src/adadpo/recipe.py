"""Command-line parsing for `run_adadpo.py` (recipe + overrides, with hints for renamed keys) and run-folder I/O."""

import dataclasses
import enum
import os
from pathlib import Path

import yaml
from trl import ModelConfig, TrlParser

from adadpo.config import RENAMED_KEYS, AdaDPOConfig, ScriptArguments
from adadpo.io import write_text_atomic


CONFIG_CLASSES = (ScriptArguments, AdaDPOConfig, ModelConfig)
RESOLVED_CONFIG_NAME = "adadpo_config.yaml"
SECRET_FIELDS = {"hub_token"}


def known_fields() -> set[str]:
    return {f.name for cls in CONFIG_CLASSES for f in dataclasses.fields(cls)}


def check_recipe_keys(recipe: dict, source: str) -> None:
    """Unknown keys fail with every offender listed and, for keys renamed upstream, what to write instead."""
    unknown = [key for key in recipe if key not in known_fields() and key != "env"]
    if not unknown:
        return
    lines = [
        f"  - {key}: " + RENAMED_KEYS.get(key, "not a field of ScriptArguments, AdaDPOConfig or ModelConfig")
        for key in unknown
    ]
    raise ValueError(f"Unknown key(s) in {source}:\n" + "\n".join(lines))


def parse_args(argv: list[str] | None = None):
    """`--config recipe.yaml` plus `--key=value` overrides into (ScriptArguments, AdaDPOConfig, ModelConfig)."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        path = argv[argv.index("--config") + 1]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Recipe {path!r} does not exist.")
        with open(path) as f:
            recipe = yaml.safe_load(f)
        if not isinstance(recipe, dict):
            raise ValueError(f"Recipe {path} must be a YAML mapping of config keys.")
        check_recipe_keys(recipe, path)
    cli_keys = [a[2:].split("=", 1)[0] for a in argv if a.startswith("--") and a != "--config"]
    check_recipe_keys({key: None for key in cli_keys}, "the command line")
    return TrlParser(CONFIG_CLASSES).parse_args_and_config(argv)


def _plain(value):
    if isinstance(value, enum.Enum):  # lr_scheduler_type, save_strategy, ... (str subclasses: check first)
        return value.value
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)  # dtypes and other objects


def resolved_config(*configs) -> dict:
    """Every field that differs from its default, plus the loss and its main knobs; never a token."""
    out = {}
    for config in configs:
        for f in dataclasses.fields(config):
            if f.name in SECRET_FIELDS or f.name.startswith("_") or not f.init:
                continue
            value = getattr(config, f.name)
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            if value != default or f.name in {"loss_type", "beta", "learning_rate", "output_dir"}:
                out[f.name] = _plain(value)
    return out


def save_resolved_config(output_dir: str, *configs) -> Path:
    return write_text_atomic(Path(output_dir) / RESOLVED_CONFIG_NAME, yaml.safe_dump(resolved_config(*configs)))
