"""Checkpoints that are all-or-nothing, and what they hold beyond transformers' own files so that a resumed run
continues exactly: the loss's state (alpha-DPO's margin normalizer) and the running counters (`num_tokens`,
`nonfinite_steps`)."""

import contextlib
import json
import logging
import os
import shutil

from transformers.trainer_utils import rotate_checkpoints

from adadpo.files import publish_dir, write_json_atomic
from adadpo.run_folder import COUNTERS_FILE, NORMALIZER_FILE, TRAINER_STATE, RunFolder
from adadpo.training.agreement import any_process


logger = logging.getLogger(__name__)


class CheckpointWriteError(RuntimeError):
    pass


def _write_failure(final: str, run_dir: str, error: BaseException | None) -> str:
    """What to tell the user when a checkpoint could not be written (disk full, quota, I/O error)."""
    previous = [str(path) for path in RunFolder(run_dir).checkpoints()]
    newest = max(previous, key=lambda path: int(path.rsplit("-", 1)[1]), default=None)
    kept = f"the previous checkpoint, {newest}, is intact" if newest else "there is no earlier checkpoint"
    free_gb = shutil.disk_usage(run_dir).free / 2**30
    cause = f"{type(error).__name__}: {error}" if error is not None else "it failed on another process"
    return (
        f"Writing {final} failed ({cause}); its staged copy was removed and {kept} ({free_gb:.1f} GiB free on that "
        "disk). Free space or lower `save_total_limit` (or move `output_dir`), then rerun the same command: it "
        "resumes from the newest complete checkpoint."
    )


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
    complete checkpoint; an error inside (a full disk) on any process removes the staged copy and stops every
    process with a `CheckpointWriteError` that names the intact checkpoint. Yields the staged checkpoint folder."""
    final = checkpoint_dir(trainer, trial)
    run_dir, name = os.path.split(final)
    staging_root = str(RunFolder(run_dir).staging)
    staged = os.path.join(staging_root, name)
    should_save, save_total_limit = trainer.args.should_save, trainer.args.save_total_limit
    if should_save and os.path.exists(staged):
        shutil.rmtree(staged)  # left behind by a save that crashed
    trainer.accelerator.wait_for_everyone()
    trainer.args.save_total_limit = None
    failure = None
    try:
        with trainer.checkpoints_written_to(staging_root):
            yield staged
    except Exception as error:  # disk full, quota, I/O: torch and safetensors raise their own types for ENOSPC
        failure = error
    finally:
        trainer.args.save_total_limit = save_total_limit
    # Every process stops here, none waits at a barrier for the others. Not under DeepSpeed or FSDP: their saves run
    # collectives inside, where the others may wait for the failed process; that one stops alone (the launcher then
    # stops the rest) and a staged copy left behind is removed by the next save.
    sharded_save = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    if (failure is not None) if sharded_save else any_process(failure is not None):
        if should_save:
            shutil.rmtree(staged, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.rmdir(staging_root)
        raise CheckpointWriteError(_write_failure(final, run_dir, failure)) from failure
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
