"""The model card: base model, data, loss and formula, every loss hyperparameter, metrics, the launch command."""

import logging
import os
from pathlib import Path

import trl
from huggingface_hub import ModelCard, ModelCardData

from adadpo.files import redact, write_text_atomic


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
    loss = trainer.loss_fn
    base_model = trainer.model.config.name_or_path if hasattr(trainer.model, "config") else "unknown"
    datasets = list(trainer.dataset_names)
    read = {name for spec in loss.specs for name in spec.hparams}
    hparams = {name: value for name, value in args.loss_hparams.items() if name in read}
    if len(loss.specs) > 1:
        hparams["loss_weights"] = list(loss.weights)
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
        tags=["adadpo", *(name.replace("_", "-") for name in args.loss_names), "trl", "preference-optimization"],
        license=None,
    )
    text = CARD_TEMPLATE.format(
        card_data=card_data.to_yaml(),
        model_name=args.hub_model_id or Path(args.output_dir).name,
        base_model=base_model,
        base_link=f"https://huggingface.co/{base_model}" if not os.path.isdir(str(base_model)) else base_model,
        loss_name=" + ".join(args.loss_names),
        paper="; ".join(dict.fromkeys(spec.paper for spec in loss.specs)),
        formula="  +  ".join(
            f"{w:g} × ({spec.formula})" if len(loss.specs) > 1 else spec.formula
            for spec, w in zip(loss.specs, loss.weights, strict=True)
        ),
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
