"""Run every preflight check on a recipe: the model, tokenizer, data and trainer come from
`adadpo.training.build.build_trainer` (what `scripts/run_adadpo.py` trains), the checks that need the prepared model
(DDP / DeepSpeed) run inside `trainer.train()` at `on_train_begin`, and train()'s own steps on the longest micro-batch
are the memory and time check. Nothing is written under the recipe's `output_dir`: the trainer gets a temporary one,
saves nothing, and the weights are restored after the steps."""

import math
import shutil
import tempfile

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import IntervalStrategy, SaveStrategy

from adadpo.preflight import distributed, identity, packing, resources, tokens
from adadpo.preflight.batches import ReferenceSource, micro_batches
from adadpo.preflight.report import FAIL, PASS, Report
from adadpo.training.build import build_trainer
from adadpo.training.oom import OutOfMemoryStop
from adadpo.training.trainer import AdaDPOTrainer
from adadpo.training.trl_compat import get_attention_implementation


STEPS = 2  # optimizer steps on the longest micro-batch; the last one is timed (the first allocates optimizer state)


class PreflightTrainer(AdaDPOTrainer):
    """`AdaDPOTrainer` without the full reference pass at construction (hours on a real dataset): the cache is only
    looked up (key and hit recorded, as training would), and a miss gets zero placeholders; the checks compute the
    reference of the rows they use with the same `compute_ref_log_probs` the pass would run."""

    def precompute_reference(self, dataset, split, batch_size):
        cached = self.ref_cache.lookup(self, dataset, split)[1] if self.ref_cache is not None else None
        chosen, rejected = cached if cached is not None else (np.zeros(len(dataset)), np.zeros(len(dataset)))
        return dataset.add_column("ref_chosen_logps", chosen.tolist()).add_column(
            "ref_rejected_logps", rejected.tolist()
        )


class ChecksAtTrainBegin(TrainerCallback):
    """Checks 2-4 once the model is prepared (DDP-wrapped, DeepSpeed-initialized), before the first step; then the
    weights are snapshot for restoring."""

    def __init__(self, report: Report, trainer, rows, num_batches: int):
        self.report, self.trainer, self.rows, self.num_batches = report, trainer, rows, num_batches
        self.details, self.saved, self.fingerprint = {}, None, None

    def on_train_begin(self, args, state, control, **kwargs):
        trainer, report = self.trainer, self.report
        model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
        was_training = model.training
        model.eval()  # dropout would make the policy and the reference differ by chance
        world = trainer.accelerator.num_processes
        batches = micro_batches(self.rows, args.per_device_train_batch_size, max(self.num_batches, world))
        try:
            self.details |= check_micro_batches(report, trainer, batches, ReferenceSource(trainer), world)
        finally:
            model.train(was_training)
        self.fingerprint = resources.fingerprint(trainer)
        self.saved = resources.snapshot(model)


def check_micro_batches(report: Report, trainer, batches: list[list[dict]], reference, world: int) -> dict:
    """Checks 2-4 on real micro-batches. Without one (an empty train split) the identity check's FAIL row is the
    whole story: the checks that compare batches have nothing to compare."""
    details = identity.check_identity(report, trainer, batches, reference, distributed.cache_fix(trainer, reference))
    losses = details.pop("losses")
    if not batches:
        return details
    packing.check_packing(report, trainer, batches)
    distributed.check_batch_arithmetic(report, trainer.args, world, trainer.parallelism.sp_size)
    distributed.check_same_loss(report, trainer, losses)
    distributed.check_reference(report, trainer, reference, batches)
    return details


def _preflight_args(training_args) -> str:
    """Training arguments for the preflight's own steps; returns the temporary output folder."""
    folder = tempfile.mkdtemp(prefix="adadpo-preflight-")
    training_args.output_dir = folder
    training_args.push_to_hub = False
    training_args.hub_token = None
    training_args.save_strategy = SaveStrategy.NO
    training_args.report_to = []
    training_args.resume_from_checkpoint = None
    training_args.oom_resplit = False  # measure the micro-batch as the recipe sets it, not split into parts
    training_args.stop_signals = "none"  # a signal stops the preflight at once: there is no run to checkpoint
    return folder


def _run_totals(args, train, data_parallel: int) -> tuple[int, int]:
    """(tokens, optimizer steps) of the whole run the recipe describes."""
    pairs_per_step = data_parallel * args.per_device_train_batch_size * args.gradient_accumulation_steps
    tokens_per_epoch = resources.dataset_tokens(train, args.max_length)
    if args.max_steps and args.max_steps > 0:
        return round(tokens_per_epoch / len(train) * pairs_per_step * args.max_steps), args.max_steps
    steps = math.ceil(len(train) / pairs_per_step) * math.ceil(args.num_train_epochs)
    return round(tokens_per_epoch * args.num_train_epochs), steps


def run_preflight(script_args, training_args, model_args, argv=None, sample_rows: int = 256, num_batches: int = 2):
    """The report (and measured details) of every check; never raises for a check that fails."""
    report, details = Report(), {}
    folder = _preflight_args(training_args)
    try:
        try:
            setup = build_trainer(script_args, training_args, model_args, argv, trainer_cls=PreflightTrainer)
        except (ValueError, FileNotFoundError, RuntimeError, TypeError) as error:
            report.add("0 setup", "build model, data and trainer", FAIL, type(error).__name__, str(error))
            return report, details
        trainer = setup.trainer
        args = trainer.args
        report.add(
            "0 setup",
            "build model, data and trainer",
            PASS,
            f"{args.loss_type}, {len(trainer.train_dataset)} train pairs, "
            f"attn {get_attention_implementation(trainer.accelerator.unwrap_model(trainer.model))}",
        )
        eos_ids = {setup.tokenizer.eos_token_id, *_generation_eos(trainer.model)} - {None}
        details |= tokens.check_tokens(
            report, setup.raw_datasets["train"], trainer.train_dataset, setup.tokenizer, args, eos_ids, sample_rows
        )
        world = trainer.accelerator.num_processes
        data_parallel = world // trainer.parallelism.sp_size  # the ranks of a sequence-parallel group share a pair
        run_tokens, run_steps = _run_totals(args, trainer.train_dataset, data_parallel)
        rows = trainer.train_dataset
        top, top_tokens = resources.longest_rows(
            rows, args.per_device_train_batch_size, args.max_length, args.padding_free
        )
        repeats = world * args.gradient_accumulation_steps * STEPS
        trainer.train_dataset = rows.select(top * repeats)  # every micro-batch of the steps is the longest one
        args.max_steps, args.train_sampling_strategy = STEPS, "sequential"
        args.eval_strategy, args.logging_strategy = IntervalStrategy.NO, IntervalStrategy.NO
        checks, timer = ChecksAtTrainBegin(report, trainer, rows, num_batches), resources.StepTimer()
        for callback in (ProgressCallback, PrinterCallback):  # the table is the output, not a progress bar
            trainer.remove_callback(callback)
        trainer.add_callback(checks)
        trainer.add_callback(timer)
        try:
            trainer.train()
        except (torch.OutOfMemoryError, OutOfMemoryStop) as error:
            resources.report_oom(report, error)
            return report, details
        details |= resources.report_resources(
            report,
            trainer,
            timer,
            top_tokens * data_parallel * args.gradient_accumulation_steps,
            run_tokens,
            run_steps,
        )
        model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
        resources.restore(model, checks.saved)
        same = resources.fingerprint(trainer) == checks.fingerprint
        report.add(
            resources.GROUP,
            "weights restored after the steps",
            PASS if same else FAIL,
            "fingerprint unchanged" if same else "fingerprint changed",
            "a bug in preflight: report it",
        )
        details |= checks.details | {"reference": ReferenceSource(trainer).describe()}
        return report, details
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _generation_eos(model) -> list[int]:
    """The ids generation stops at (Gemma's `<end_of_turn>`, Llama-3's `<|eot_id|>`) also count as EOS."""
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    return list(eos) if isinstance(eos, list | tuple) else [eos]
