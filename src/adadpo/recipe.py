"""Command-line parsing for `run_adadpo.py` (recipe + overrides, with hints for renamed keys) and run-folder I/O."""

import dataclasses
import difflib
import enum
import functools
import os
from pathlib import Path

import yaml
from trl import ModelConfig, TrlParser

from adadpo.config import AdaDPOConfig, ScriptArguments
from adadpo.files import write_text_atomic
from adadpo.run_folder import RunFolder


CONFIG_CLASSES = (ScriptArguments, AdaDPOConfig, ModelConfig)
SECRET_FIELDS = {"hub_token"}


# Recipe keys people carry over from older TRL / alignment-handbook recipes, and what to write instead.
RENAMED_KEYS = {
    "torch_dtype": "use `dtype` (transformers 5 renamed it)",
    "max_prompt_length": "remove it: TRL 1.x truncates prompt+completion together with `max_length`",
    "warmup_ratio": "use `warmup_steps: 0.1` (a float in [0, 1) is a ratio of total steps in transformers 5)",
    "dataset_splits": "use `dataset_train_split` / `dataset_test_split`, or `dataset_mixture` with `test_split_size`",
    "gamma_beta_ratio": "use `simpo_gamma` (gamma itself, not gamma/beta)",
    "gamma": "use `simpo_gamma`",
    "ln": "length normalisation is part of each loss; pick `loss_type` instead",
    "rpo_alpha": "use `sft_weight` (SimPO/alpha-DPO) or `cpo_alpha` (CPO)",
    "alpha": "use `alpha_dpo_alpha` (alpha-DPO's alpha in eq. 12 form: beta x the official config's `alpha`)",
    "model_init_kwargs": None,  # valid, listed so the hint table stays exhaustive for known keys
}
RENAMED_KEYS = {k: v for k, v in RENAMED_KEYS.items() if v is not None}


@functools.lru_cache(maxsize=1)
def config_fields() -> dict[str, dataclasses.Field]:
    """Every recipe key `run_adadpo.py` accepts: the fields of its three config dataclasses."""
    return {f.name: f for cls in CONFIG_CLASSES for f in dataclasses.fields(cls)}


def unknown_key_message(key: str) -> str:
    """What to write instead of an unknown recipe key: the rename, else the closest field, else that it is none."""
    if key in RENAMED_KEYS:
        return f"`{key}`: {RENAMED_KEYS[key]}"
    close = difflib.get_close_matches(key, sorted(config_fields()), n=1)
    hint = f" (did you mean `{close[0]}`?)" if close else ""
    return f"`{key}` is not a field of ScriptArguments, AdaDPOConfig or ModelConfig{hint}"


def check_recipe_keys(recipe: dict, source: str) -> None:
    """Unknown keys fail with every offender listed and, for keys renamed upstream, what to write instead."""
    unknown = [key for key in recipe if key not in config_fields() and key != "env"]
    if unknown:
        raise ValueError(
            f"Unknown key(s) in {source}:\n" + "\n".join(f"  - {unknown_key_message(k)}" for k in unknown)
        )


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
    return write_text_atomic(RunFolder(output_dir).resolved_config, yaml.safe_dump(resolved_config(*configs)))
