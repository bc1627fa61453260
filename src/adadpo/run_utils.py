"""Command-line parsing for `run_adadpo.py` (recipe + overrides, with hints for renamed keys) and run-folder I/O."""

import contextlib
import dataclasses
import enum
import json
import os
import shutil
from pathlib import Path
from unittest import mock

import yaml
from trl import ModelConfig, TrlParser

from adadpo.configs import RENAMED_KEYS, AdaDPOConfig, ScriptArguments


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
    path = Path(output_dir) / RESOLVED_CONFIG_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(resolved_config(*configs), sort_keys=True))
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    os.replace(tmp, path)


CHECKPOINT_STAGING_DIR = ".checkpoint-staging"  # transformers resumes only from `checkpoint-<N>` folders


def checkpoint_dir(trainer, trial=None) -> str:
    """The current step's `checkpoint-N` folder in the run folder (where `atomic_checkpoint` renames it to)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    return os.path.join(trainer._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}")


@contextlib.contextmanager
def atomic_checkpoint(trainer, trial=None):
    """Make a Trainer's `_save_checkpoint` all-or-nothing: inside, `trainer._get_output_dir` points at a staging
    folder; on exit (after every process has written) the complete `checkpoint-N` is renamed into the run folder in
    one step, and only then are older checkpoints rotated out (`save_total_limit`). A crash inside leaves the run
    folder as it was, so resuming picks the previous complete checkpoint. Yields the staged checkpoint folder."""
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import rotate_checkpoints

    final = checkpoint_dir(trainer, trial)
    run_dir, name = os.path.split(final)
    staging_root = os.path.join(run_dir, CHECKPOINT_STAGING_DIR)
    staged = os.path.join(staging_root, name)
    should_save, save_total_limit = trainer.args.should_save, trainer.args.save_total_limit
    if should_save and os.path.exists(staged):
        shutil.rmtree(staged)  # left behind by a save that crashed
    trainer.accelerator.wait_for_everyone()
    trainer.args.save_total_limit = None
    try:
        with mock.patch.object(trainer, "_get_output_dir", return_value=staging_root):
            yield staged
    finally:
        trainer.args.save_total_limit = save_total_limit
    best = trainer.state.best_model_checkpoint
    if should_save and best and os.path.dirname(best) == staging_root:  # the new checkpoint is the best one
        trainer.state.best_model_checkpoint = os.path.join(run_dir, os.path.basename(best))
        trainer.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
    trainer.accelerator.wait_for_everyone()
    if should_save:
        if os.path.exists(final):  # a rerun reaching the same step: swap, then delete the old folder
            aside = f"{final}.replaced"
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)
            os.replace(staged, final)
            shutil.rmtree(aside)
        else:
            os.replace(staged, final)
        with contextlib.suppress(OSError):  # empty unless another step's save crashed
            os.rmdir(staging_root)
        rotate_checkpoints(run_dir, save_total_limit, trainer.state.best_model_checkpoint, use_mtime=True)
    trainer.accelerator.wait_for_everyone()
