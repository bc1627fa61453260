"""Model card, the Hub client and the final Hub push. The model is always saved locally first; a failed push never
loses the local save. Checkpoint pushes during training: `adadpo.hub_checkpoints`; resume from the Hub:
`adadpo.hub_resume`."""

import logging
import os
import re
from pathlib import Path

import trl
from huggingface_hub import HfApi, ModelCard, ModelCardData

from adadpo.io import write_text_atomic
from adadpo.losses import LOSS_SPECS


logger = logging.getLogger(__name__)

CARD_TEMPLATE = """\
---
{card_data}
---

# {model_name}

This model is [{base_model}]({base_link}) aligned with **{loss_name}** ({paper}) on {datasets}, trained with the
adadpo recipes (`scripts/run_adadpo.py`) on TRL {trl_version}.

## Loss

`{loss_name}`: `{formula}`

| hyperparameter | value |
|---|---|
{hparams}

## Training

| setting | value |
|---|---|
{training}

## Results

{results_intro}

{metrics}

## Reproduce

```bash
{command}
```
"""

_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{10,}")


def redact(text: str, secrets=()) -> str:
    """Remove anything that looks like a Hugging Face token, and the given secret values, from text that will be
    logged or written."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _TOKEN_PATTERN.sub("hf_***", text)


def _final_metrics(log_history: list[dict]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for entry in log_history:
        for key, value in entry.items():
            if isinstance(value, int | float) and key not in ("step", "epoch"):
                metrics[key] = value
    return metrics


def _table(rows: dict) -> str:
    return "\n".join(f"| {key} | {value} |" for key, value in rows.items()) or "| - | - |"


def build_model_card(trainer, checkpoint_step: int | None = None) -> ModelCard:
    """The card of the finished run, or with `checkpoint_step` of a checkpoint pushed while training goes on."""
    args = trainer.args
    spec = LOSS_SPECS[args.loss_type]
    base_model = trainer.model.config._name_or_path if hasattr(trainer.model, "config") else "unknown"
    datasets = list(trainer.dataset_names)
    hparams = {name: value for name, value in args.loss_hparams.items() if name in spec.hparams}
    training = {
        "learning_rate": args.learning_rate,
        "global batch (pairs)": args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps,
        "max_length": args.max_length,
        "epochs": args.num_train_epochs,
        "lr scheduler": getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type),
        "warmup": args.warmup_steps,
        "padding_free (packed)": args.padding_free,
        "seed": args.seed,
    }
    final = _final_metrics(trainer.state.log_history)
    wanted = [k for k in final if k.startswith(("train_", "eval_", "rewards/", "adadpo/", "kl/")) or k == "loss"]
    metrics = _table({k: f"{final[k]:.4g}" for k in wanted}) if wanted else "No metrics were logged."
    card_data = ModelCardData(
        base_model=base_model if base_model and not os.path.isdir(base_model) else None,
        datasets=[d for d in datasets if not os.path.exists(d)] or None,
        library_name="transformers",
        tags=["adadpo", args.loss_type.replace("_", "-"), "trl", "preference-optimization"],
        license=None,
    )
    text = CARD_TEMPLATE.format(
        card_data=card_data.to_yaml(),
        model_name=args.hub_model_id or Path(args.output_dir).name,
        base_model=base_model,
        base_link=f"https://huggingface.co/{base_model}" if not os.path.isdir(str(base_model)) else base_model,
        loss_name=args.loss_type,
        paper=spec.paper,
        formula=spec.formula,
        datasets=", ".join(datasets) or "a preference dataset",
        hparams=_table({**hparams, "beta": args.beta}),
        training=_table(training),
        results_intro=_results_intro(trainer.state, checkpoint_step),
        metrics=metrics,
        trl_version=trl.__version__,
        command=redact(trainer.launch_command or "(launched from Python)"),
    )
    return ModelCard(redact(text))


def _results_intro(state, checkpoint_step: int | None) -> str:
    if checkpoint_step is None:
        return f"Final metrics, after {state.global_step} optimizer steps."
    return (
        f"**Checkpoint at step {checkpoint_step} of {state.max_steps}**, pushed while training goes on; the metrics "
        "are the latest logged at this step."
    )


def write_model_card(trainer, path: str) -> None:
    write_text_atomic(path, str(build_model_card(trainer)))


HUB_SNAPSHOT_DIR = ".hub-push"  # output_dir/.hub-push/checkpoint-N: hard-linked copies of checkpoints being pushed
_NOT_PUSHED_AT_THE_END = [
    "checkpoint-*",
    ".checkpoint-staging/*",
    f"{HUB_SNAPSHOT_DIR}/*",
    "*.tmp",
    "runs/*",
    "ref_cache/*",
]


def hub_api(token=None) -> HfApi:
    """The one place that builds a Hub client. Token: `token` (the recipe's `hub_token`), else HF_TOKEN or
    `huggingface-cli login`; it stays in memory and is never printed."""
    return HfApi(token=token)


def hub_repo_id(args) -> str:
    """`hub_model_id`, else the run folder's name (what transformers' Trainer uses too)."""
    return args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))


def ensure_repo(api: HfApi, repo_id: str, private: bool | None, revision: str | None) -> None:
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)


def failure_reason(error: Exception, token=None) -> str:
    """What went wrong, fit to log: any token (the given one, HF_TOKEN, anything shaped like one) replaced."""
    return redact(str(error) or type(error).__name__, secrets=(token, os.environ.get("HF_TOKEN")))


def push_folder(
    output_dir: str, repo_id: str, private: bool | None, revision: str | None, commit_message: str, token=None
):
    """Upload a saved run folder (model, tokenizer, card; not intermediate checkpoints)."""
    api = hub_api(token)
    ensure_repo(api, repo_id, private, revision)
    return api.upload_folder(
        folder_path=output_dir,
        repo_id=repo_id,
        revision=revision,
        commit_message=commit_message,
        ignore_patterns=_NOT_PUSHED_AT_THE_END,
    )


class HubError(RuntimeError):
    """A Hub failure the script reports as one line and exit status 1 (the message says what was kept locally)."""


class HubPushError(HubError):
    pass


def safe_push(
    output_dir: str, repo_id: str, private: bool | None, revision: str | None, commit_message: str, token=None
):
    """Push and turn any failure into one clear error that says the local save is complete (token redacted)."""
    try:
        return push_folder(output_dir, repo_id, private, revision, commit_message, token=token)
    except Exception as error:  # network, auth, permissions: all mean the same to the user
        reason = failure_reason(error, token)
        raise HubPushError(
            f"Pushing {output_dir} to the Hub repo {repo_id!r} failed: {reason}. The model, tokenizer and "
            f"model card are saved locally in {output_dir}; push them later with `huggingface-cli upload {repo_id} "
            f"{output_dir}` after checking your login (`huggingface-cli whoami`) and network."
        ) from None
