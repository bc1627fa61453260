"""Checkpoints that are all-or-nothing, and what they hold beyond transformers' own files so that a resumed run
continues exactly: the loss's state (alpha-DPO's margin normalizer) and the running counters (`num_tokens`,
`nonfinite_steps`)."""

import contextlib
import json
import os
import shutil

from transformers.trainer_utils import rotate_checkpoints

from adadpo.files import publish_dir, write_json_atomic
from adadpo.run_folder import COUNTERS_FILE, NORMALIZER_FILE, TRAINER_STATE, RunFolder


def save_extra_state(trainer, folder: str) -> None:
    counters = {"num_tokens": trainer.total_train_tokens, "nonfinite_steps": trainer.nonfinite_guard.total_skipped}
    write_json_atomic(os.path.join(folder, COUNTERS_FILE), counters)
    loss_state = trainer.loss_fn.state_dict()
    if "margin_normalizer" in loss_state:
        write_json_atomic(os.path.join(folder, NORMALIZER_FILE), loss_state["margin_normalizer"])


def _read(checkpoint: str, name: str) -> dict | None:
    path = os.path.join(checkpoint, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_extra_state(trainer, checkpoint: str) -> None:
    trainer.loss_fn.load_state_dict({"margin_normalizer": _read(checkpoint, NORMALIZER_FILE)})
    counters = _read(checkpoint, COUNTERS_FILE)
    if counters is not None:
        trainer.total_train_tokens = counters["num_tokens"]
        trainer.nonfinite_guard.total_skipped = counters["nonfinite_steps"]


def checkpoint_dir(trainer, trial=None) -> str:
    """The current step's `checkpoint-N` folder in the run folder (where `atomic_checkpoint` renames it to)."""
    return str(RunFolder(trainer.run_dir(trial)).checkpoint(trainer.state.global_step))


@contextlib.contextmanager
def atomic_checkpoint(trainer, trial=None):
    """Make a Trainer's `_save_checkpoint` all-or-nothing: inside, the trainer's checkpoint root
    (`TRLCompatTrainer.checkpoints_written_to`) is a staging folder; on exit (after every process has written) the
    complete `checkpoint-N` is renamed into the run folder in one step, and only then are older checkpoints rotated
    out (`save_total_limit`). A crash inside leaves the run folder as it was, so resuming picks the previous
    complete checkpoint. Yields the staged checkpoint folder."""
    final = checkpoint_dir(trainer, trial)
    run_dir, name = os.path.split(final)
    staging_root = str(RunFolder(run_dir).staging)
    staged = os.path.join(staging_root, name)
    should_save, save_total_limit = trainer.args.should_save, trainer.args.save_total_limit
    if should_save and os.path.exists(staged):
        shutil.rmtree(staged)  # left behind by a save that crashed
    trainer.accelerator.wait_for_everyone()
    trainer.args.save_total_limit = None
    try:
        with trainer.checkpoints_written_to(staging_root):
            yield staged
    finally:
        trainer.args.save_total_limit = save_total_limit
    best = trainer.state.best_model_checkpoint
    if should_save and best and os.path.dirname(best) == staging_root:  # the new checkpoint is the best one
        trainer.state.best_model_checkpoint = os.path.join(run_dir, os.path.basename(best))
        trainer.state.save_to_json(os.path.join(staged, TRAINER_STATE))
    trainer.accelerator.wait_for_everyone()
    if should_save:
        publish_dir(staged, final)  # a rerun reaching the same step replaces that step's folder
        with contextlib.suppress(OSError):  # empty unless another step's save crashed
            os.rmdir(staging_root)
        rotate_checkpoints(run_dir, save_total_limit, trainer.state.best_model_checkpoint, use_mtime=True)
    trainer.accelerator.wait_for_everyone()
