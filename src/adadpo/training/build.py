"""The setup stages every entry point that trains (or checks a training run) shares: tokenizer, model, data and
trainer, built from a parsed recipe exactly as `scripts/run_adadpo.py` builds them. `scripts/preflight.py` calls the
same function, so what it checks is what a run would train."""

import shlex
import sys
from dataclasses import dataclass

from datasets import DatasetDict
from transformers import PreTrainedTokenizerBase
from trl import ModelConfig, get_peft_config

from adadpo.config import AdaDPOConfig, ScriptArguments
from adadpo.data import dataset_names, get_preference_datasets
from adadpo.losses import get_loss_spec
from adadpo.training.launch_checks import apply_launch
from adadpo.training.models import get_model, get_tokenizer
from adadpo.training.trainer import AdaDPOTrainer


@dataclass
class RunSetup:
    """What `build_trainer` built: the trainer, and the untokenized splits it was built from."""

    trainer: AdaDPOTrainer
    tokenizer: PreTrainedTokenizerBase
    raw_datasets: DatasetDict


def build_trainer(
    script_args: ScriptArguments,
    training_args: AdaDPOConfig,
    model_args: ModelConfig,
    argv=None,
    *,
    hub_pusher=None,
    trainer_cls: type[AdaDPOTrainer] = AdaDPOTrainer,
) -> RunSetup:
    """The launch checks, then tokenizer, policy model, preference splits and the trainer (TRL tokenizes and, if
    asked, precomputes the reference log-probs inside it). `trainer_cls` lets preflight swap one hook (the reference precompute) and nothing
    else."""
    apply_launch(training_args)  # processes and devices vs the recipe; gradient accumulation from the global batch
    tokenizer = get_tokenizer(model_args, script_args.chat_template, training_args.trust_remote_code)
    model = get_model(model_args, training_args)
    dataset = get_preference_datasets(
        script_args,
        tokenizer,
        seed=training_args.seed,
        needs_reward_margin=any(get_loss_spec(name).needs_reward_margin for name in training_args.loss_names),
    )
    eval_dataset = dataset.get("test")
    if eval_dataset is None and training_args.eval_strategy != "no":
        raise ValueError(
            f"`eval_strategy: {training_args.eval_strategy}` needs an eval split: set `test_split_size` or a dataset "
            "with a test split, or set `eval_strategy: no`."
        )
    trainer = trainer_cls(
        model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        max_drop_fraction=script_args.max_drop_fraction,
        launch_command=launch_command(argv, training_args.world_size),
        dataset_names=dataset_names(script_args),
        hub_pusher=hub_pusher,
    )
    return RunSetup(trainer, tokenizer, dataset)


def launch_command(argv, world_size: int, script: str = "scripts/run_adadpo.py") -> str:
    """The command the model card shows: never the Hub token."""
    argv = list(argv if argv is not None else sys.argv[1:])
    for i, arg in enumerate(argv):
        if arg.startswith("--hub_token="):
            argv[i] = "--hub_token=***"
        elif i and argv[i - 1] == "--hub_token":
            argv[i] = "***"
    args = " ".join(shlex.quote(a) for a in argv)
    return f"accelerate launch --num_processes {world_size} {script} {args}"
