"""The recipe: parsing `--config recipe.yaml` plus `--key=value` overrides (every key checked, renamed keys with a
hint), `--help` listing every key by what it controls, and the resolved recipe saved with a run."""

import dataclasses
import difflib
import enum
import functools
import os
import sys
import warnings
from pathlib import Path

import yaml
from trl import ModelConfig, TrlParser

from adadpo.config import AdaDPOConfig, ScriptArguments
from adadpo.files import write_text_atomic
from adadpo.losses import LOSS_HPARAMS
from adadpo.run_folder import RunFolder


CONFIG_CLASSES = (ScriptArguments, AdaDPOConfig, ModelConfig)
SECRET_FIELDS = {"hub_token"}


# Keys renamed upstream with one exact translation: accepted under the old name, with a warning naming the new one.
TRANSLATED_KEYS = {
    "torch_dtype": "dtype",  # transformers 5
    "warmup_ratio": "warmup_steps",  # transformers 5: a warmup_steps float below 1 is a ratio of the total steps
    "hub_model_revision": "hub_revision",  # alignment-handbook's name
}
# Recipe keys people carry over from older TRL / alignment-handbook recipes with no faithful meaning here, and what
# to write instead.
RENAMED_KEYS = {
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


def _negated_flag(key: str) -> str | None:
    """`no_X` -> `X` where `X` is a bool field that defaults to true (HfArgumentParser adds `--no_X` for exactly
    those); None otherwise."""
    field = config_fields().get(key.removeprefix("no_")) if key.startswith("no_") else None
    return field.name if field is not None and field.type in (bool, "bool") and field.default is True else None


def command_line_keys(argv: list[str]) -> list[str]:
    """The recipe keys `--key[=value]` arguments name (`--no_X` names `X`); `--config` is not one."""
    keys = [arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--") and arg.split("=", 1)[0] != "--config"]
    return [_negated_flag(key) or key for key in keys]


# --help: every key, grouped by what it controls.
HELP_GROUPS = ("model", "data", "loss", "training", "Hub")


def help_group(name: str) -> str:
    if name in {f.name for f in dataclasses.fields(ModelConfig)}:
        return "model"
    if name in {f.name for f in dataclasses.fields(ScriptArguments)}:
        return "data"
    if name == "loss_type" or name in LOSS_HPARAMS:
        return "loss"
    if name.startswith("hub_") or name == "push_to_hub":
        return "Hub"
    return "training"


def _default_text(field: dataclasses.Field) -> str:
    if field.default_factory is not dataclasses.MISSING:
        return repr(field.default_factory())
    return repr(field.default.value if isinstance(field.default, enum.Enum) else field.default)


def recipe_help(script: str = "scripts/run_adadpo.py") -> str:
    """What `--help` prints: how to pass a recipe, then every key by group with its default and help text."""
    lines = [
        f"usage: accelerate launch [--config_file CONFIG] {script} --config RECIPE.yaml [--key=value ...]",
        "",
        "Every key below can be written in the recipe (`key: value`) or on the command line (`--key=value`, which",
        "wins over the recipe). A boolean key that defaults to true is switched off with `--no_<key>`.",
    ]
    by_group = {group: [] for group in HELP_GROUPS}
    for name, field in config_fields().items():
        if field.init and not name.startswith("_"):
            by_group[help_group(name)].append(field)
    for group, fields in by_group.items():
        lines += ["", f"{group} ({len(fields)} keys)"]
        for field in fields:
            lines.append(f"  --{field.name}  (default: {_default_text(field)})")
            text = " ".join(str(field.metadata.get("help", "")).split())
            if field.metadata.get("choices"):
                text += f" Choices: {', '.join(map(str, field.metadata['choices']))}."
            if text:
                lines.append(f"      {text}")
    return "\n".join(lines)


def translate_key(key: str, source: str) -> str:
    """The current name of a key renamed upstream (with a warning), else the key."""
    if key not in TRANSLATED_KEYS:
        return key
    warnings.warn(f"`{key}` in {source} is read as `{TRANSLATED_KEYS[key]}`, its current name.", stacklevel=3)
    return TRANSLATED_KEYS[key]


def refuse_dataset_mixer(recipe: dict, source: str) -> None:
    """alignment-handbook's pre-2025 `dataset_mixer` / `dataset_splits`: refused, with the block to write instead."""
    if "dataset_mixer" not in recipe and "dataset_splits" not in recipe:
        return
    mixer = recipe.get("dataset_mixer") or {"<dataset id>": 1.0}
    splits = list(recipe.get("dataset_splits") or ["train"])
    train_splits = [s for s in splits if "test" not in s] or ["train"]
    entries = [
        {"id": name, "split": split, "weight": float(weight)}
        for name, weight in mixer.items()
        for split in train_splits
    ]
    block = yaml.safe_dump(
        {"dataset_mixture": {"datasets": entries, "seed": 0, "test_split_size": 0.05}}, sort_keys=False
    )
    raise ValueError(
        f"{source} uses alignment-handbook's old `dataset_mixer` / `dataset_splits`, which it replaced with "
        f"`dataset_mixture`. Write instead:\n\n{block}\n"
        "A mixture has no named test split: `test_split_size` holds out a share of it (the splits named with "
        f"`test` above, {[s for s in splits if 'test' in s] or 'none'}, are not used). One dataset with its own test "
        "split: `dataset_name` + `dataset_test_split`."
    )


def read_recipe(path: str) -> dict:
    """The recipe file's keys, current names (renamed keys translated), its `env` applied as TRL does."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Recipe {path!r} does not exist.")
    with open(path) as f:
        recipe = yaml.safe_load(f)
    if not isinstance(recipe, dict):
        raise ValueError(f"Recipe {path} must be a YAML mapping of config keys.")
    env = recipe.pop("env", None) or {}
    if not isinstance(env, dict):
        raise ValueError(f"`env` in {path} must be a mapping of environment variables.")
    os.environ.update({key: str(value) for key, value in env.items()})
    refuse_dataset_mixer(recipe, path)
    if "warmup_ratio" in recipe and not 0 <= float(recipe["warmup_ratio"]) < 1:
        raise ValueError(f"`warmup_ratio` in {path} must be in [0, 1) to be read as a ratio of the total steps.")
    recipe = {translate_key(key, path): value for key, value in recipe.items()}
    check_recipe_keys(recipe, path)
    return recipe


# alignment-handbook lays its recipes out as recipes/<model>/<method>/config_*.yaml and leaves `loss_type` to the
# method's trainer: DPOTrainer's default, or ORPOTrainer, whose `beta` is ORPO's lambda (this project's `orpo_lambda`,
# with the log-odds term unscaled, beta = 1).
HANDBOOK_METHOD_FOLDERS = {
    "dpo": lambda recipe: {"loss_type": "sigmoid"},
    "orpo": lambda recipe: {"loss_type": "orpo", "orpo_lambda": recipe.get("beta", 0.1), "beta": 1.0},
}


def loss_from_recipe_folder(recipe: dict, path: str | None) -> dict:
    """The loss of a recipe that does not name one, from its alignment-handbook folder (`.../dpo/`, `.../orpo/`), with
    a warning saying what was read; anywhere else an unnamed loss is refused (DPO and ORPO recipes look alike)."""
    method = os.path.basename(os.path.dirname(os.path.abspath(path))) if path else None
    if method not in HANDBOOK_METHOD_FOLDERS:
        where = f"the recipe {path}" if path else "the command line"
        raise ValueError(
            f"`loss_type` is not set in {where}. Name the loss: `loss_type: sigmoid` for DPO (TRL's default), "
            "`loss_type: adadpo` for AdaDPO, or, for an alignment-handbook ORPO recipe, `loss_type: orpo` with its "
            "`beta` as `orpo_lambda` and `beta: 1.0` (TRL's ORPOConfig calls ORPO's lambda `beta`). A recipe kept in "
            "alignment-handbook's `.../dpo/` or `.../orpo/` folder is read as that method."
        )
    keys = HANDBOOK_METHOD_FOLDERS[method](recipe)
    warnings.warn(
        f"`loss_type` is not set; the recipe is in a `{method}/` folder, so it is taken for alignment-handbook's "
        f"{method.upper()} recipe: " + ", ".join(f"{k}: {v}" for k, v in keys.items()) + ". Write these keys in the "
        "recipe to silence this.",
        stacklevel=3,
    )
    return keys


def translate_argv(argv: list[str]) -> list[str]:
    """Command-line `--old_name[=value]` of renamed keys as their current names (with a warning)."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if arg.startswith("--") and key[2:] in TRANSLATED_KEYS:
            arg = f"--{translate_key(key[2:], 'the command line')}{sep}{value}"
        out.append(arg)
    return out


# Fields that take a mapping: on the command line their value is YAML / JSON text (`--column_mapping={a: b}`).
MAPPING_FIELDS = ("dataset_mixture", "column_mapping")


def mapping_overrides(argv: list[str]) -> dict:
    """The `--<mapping field>=<YAML>` arguments, parsed."""
    out = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key[2:] in MAPPING_FIELDS:
            parsed = yaml.safe_load(value)
            if not isinstance(parsed, dict):
                raise ValueError(f"`{key[2:]}` on the command line must be a YAML / JSON mapping, got {value!r}.")
            out[key[2:]] = parsed
    return out


def parse_args(argv: list[str] | None = None):
    """`--config recipe.yaml` plus `--key=value` overrides into (ScriptArguments, AdaDPOConfig, ModelConfig);
    `--help` prints every key and exits."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(recipe_help())
        raise SystemExit(0)
    recipe, recipe_path = {}, None
    if "--config" in argv:
        at = argv.index("--config")
        recipe_path = argv[at + 1]
        recipe = read_recipe(recipe_path)
        argv = argv[:at] + argv[at + 2 :]
    argv = translate_argv(argv)
    check_recipe_keys({key: None for key in command_line_keys(argv)}, "the command line")
    recipe |= mapping_overrides(argv)  # `--dataset_mixture={...}`: argparse cannot parse a mapping
    argv = [arg for arg in argv if arg.split("=", 1)[0][2:] not in MAPPING_FIELDS or "=" not in arg]
    if "loss_type" not in recipe and "loss_type" not in command_line_keys(argv):
        recipe |= loss_from_recipe_folder(recipe, recipe_path)
    parser = TrlParser(CONFIG_CLASSES)
    parser.set_defaults_with_config(**recipe)  # every key is a field (checked above): nothing is left over
    return parser.parse_args_into_dataclasses(args=argv)


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
