r"""Train a causal LM on preference pairs with any loss of `adadpo.losses` (AdaDPO, DPO, SimPO, alpha-DPO, ...).

    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml scripts/run_adadpo.py \
        --config recipes/llama-3-8b-instruct/adadpo/config_full.yaml [--key=value ...]
"""

import logging
import os
import sys
import time

import datasets
import transformers
from trl import ModelConfig

from adadpo.cli import REFUSAL_ERRORS, is_refusal, refusals_before_training
from adadpo.config import AdaDPOConfig, ScriptArguments
from adadpo.files import write_json_atomic
from adadpo.hub.checkpoints import CheckpointPusher
from adadpo.hub.push import HubError, hub_repo_id, safe_push
from adadpo.hub.resume import resume_checkpoint
from adadpo.recipe import parse_args, save_resolved_config
from adadpo.run_folder import RunFolder
from adadpo.training.build import build_trainer
from adadpo.training.preemption import PREEMPTED_EXIT_CODE


logger = logging.getLogger(__name__)


def main(script_args: ScriptArguments, training_args: AdaDPOConfig, model_args: ModelConfig, argv=None):
    ###############
    # Setup logging
    ###############
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    for lib_logger in (logger, logging.getLogger("adadpo"), datasets.utils.logging, transformers.utils.logging):
        lib_logger.set_verbosity(log_level) if hasattr(lib_logger, "set_verbosity") else lib_logger.setLevel(log_level)
    if training_args.overwrite_output_dir and training_args.resume_from_checkpoint is None:
        set_aside_checkpoints(training_args)  # start over; the earlier run's checkpoints are kept, not resumed from

    ##########################################
    # Model, tokenizer, data and trainer
    ##########################################
    # adadpo.training.build.build_trainer: shared with scripts/preflight.py, so a preflight checks this very setup.
    push_to_hub = training_args.push_to_hub
    training_args.push_to_hub = False  # we push once, at the end, after everything is saved locally
    hub_token, training_args.hub_token = training_args.hub_token, None  # else pickled into training_args.bin
    with refusals_before_training():
        trainer = build_trainer(
            script_args,
            training_args,
            model_args,
            argv,
            hub_pusher=CheckpointPusher.from_args(training_args, push_to_hub, hub_token),  # `hub_strategy`
        ).trainer
    eval_dataset = trainer.eval_dataset
    logger.info(
        "loss_type=%s beta=%s lr=%s world_size=%d per_device_batch=%d grad_accum=%d",
        training_args.loss_type,
        training_args.beta,
        training_args.learning_rate,
        training_args.world_size,
        training_args.per_device_train_batch_size,
        training_args.gradient_accumulation_steps,
    )

    ##########
    # Training
    ##########
    # unset: the newest complete checkpoint in output_dir; `auto`: that, else the Hub's; `hub`: the Hub's
    checkpoint = resume_checkpoint(training_args, push_to_hub, hub_token)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.stop_on_signal.stopped:  # a checkpoint of this step is written: hand back to the scheduler
        stop_after_signal(trainer, training_args)
        return trainer
    metrics = {**train_result.metrics, "train_samples": len(trainer.train_dataset)}
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics, combined=False)
    if eval_dataset is not None and training_args.do_eval is not False:  # unset: evaluate at the end
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics, combined=False)
        metrics.update(eval_metrics)
    trainer.save_state()  # after the final evaluation, so trainer_state.json holds it for plots

    ##################################
    # Save model, model card, and push
    ##################################
    trainer.model.config.use_cache = True
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        trainer.create_model_card()
        save_resolved_config(training_args.output_dir, script_args, training_args, model_args)
        write_json_atomic(RunFolder(training_args.output_dir).all_results, metrics)  # written last: finished
        logger.info("Model, tokenizer and model card saved to %s", os.path.abspath(training_args.output_dir))
    trainer.accelerator.wait_for_everyone()
    training_args.push_to_hub = push_to_hub
    if push_to_hub and trainer.accelerator.is_main_process:
        if trainer.hub_pusher is not None:
            trainer.hub_pusher.finish()  # checkpoint pushes first, so that the final model lands last
        repo_id = hub_repo_id(training_args)
        safe_push(
            training_args.output_dir,
            repo_id,
            training_args.hub_private_repo,
            training_args.hub_revision,
            f"AdaDPO run: {training_args.loss_type}",
            token=hub_token,
        )
        logger.info("Pushed %s to the Hub repo %s", training_args.output_dir, repo_id)
    return trainer


def stop_after_signal(trainer, args) -> None:
    """After a stop signal: no final evaluation or model (the run is not finished); wait for the checkpoint's Hub push
    within `stop_push_grace_seconds` (the pusher runs on the main process only)."""
    step = trainer.stop_on_signal.stopped_at_step
    if trainer.hub_pusher is not None and trainer.accelerator.is_main_process:
        if not trainer.hub_pusher.finish(timeout=args.stop_push_grace_seconds):
            trainer.stop_on_signal.push_pending = True
            logger.warning(
                "The Hub push of checkpoint-%d did not finish within stop_push_grace_seconds=%s; the local checkpoint "
                "is complete and is pushed again by the resumed run's next save.",
                step,
                args.stop_push_grace_seconds,
            )
    trainer.accelerator.wait_for_everyone()
    logger.warning(
        "Stopped on %s after checkpoint-%d: exit code %d; rerun the same command to resume.",
        trainer.stop_on_signal.received,
        step,
        PREEMPTED_EXIT_CODE,
    )


def set_aside_checkpoints(args) -> None:
    """`overwrite_output_dir`: move `output_dir`'s checkpoints into `previous-runs/<time>/` (main process; every
    process waits), so neither this run nor a relaunch of it resumes from them, and nothing is deleted."""
    run = RunFolder(args.output_dir)
    with args.main_process_first(desc="set the previous run's checkpoints aside"):
        if args.should_save and run.checkpoints():
            aside = run.previous_runs / time.strftime("%Y%m%d-%H%M%S")
            aside.mkdir(parents=True)
            for checkpoint in run.checkpoints():
                os.replace(checkpoint, aside / checkpoint.name)
            logger.warning("overwrite_output_dir: the earlier run's checkpoints are now in %s", aside)


def cli() -> int:
    try:
        with refusals_before_training():
            parsed = parse_args()
        trainer = main(*parsed, argv=sys.argv[1:])
    except REFUSAL_ERRORS as error:
        if not is_refusal(error):
            raise
        print(f"error: {error}", file=sys.stderr)  # the recipe, data or launch cannot run: the message says the fix
        return 2
    except HubError as error:
        logger.error("%s", error)
        return 1
    if trainer.stop_on_signal.push_pending:  # exit now: the interpreter would wait for the upload thread
        logging.shutdown()  # (trackers' own exit hooks do not run: a wandb run may show as crashed)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(PREEMPTED_EXIT_CODE)
    return PREEMPTED_EXIT_CODE if trainer.stop_on_signal.stopped else 0
