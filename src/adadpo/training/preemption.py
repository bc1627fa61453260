"""Stop on a signal at an optimizer-step boundary, with a complete checkpoint, so that the same command resumes.

Clusters warn before they stop a job: Slurm sends the signal `--signal=USR1@<seconds>` asks for before the time
limit, and SIGTERM on preemption or `scancel`. On one of `stop_signals` the handler only records it (a second
signal changes nothing, so it cannot interrupt a save); at the end of the current optimizer step every process
learns it from one all-reduce, the step's checkpoint is written (the atomic one: staged, then renamed), training
stops, and the script waits for the checkpoint's Hub push within `stop_push_grace_seconds` and exits with
`PREEMPTED_EXIT_CODE`.
"""

import logging
import signal
import threading

from transformers import TrainerCallback

from adadpo.training.agreement import any_process


logger = logging.getLogger(__name__)

# sysexits.h EX_TEMPFAIL, "temporary failure, the user is invited to retry": the run stopped on a signal after
# writing a checkpoint; `scripts/slurm/launch.slurm` requeues the job on it.
PREEMPTED_EXIT_CODE = 75


class StopOnSignal(TrainerCallback):
    """The handlers live from `on_train_begin` until `restore()` (the trainer's `train` calls it, also when training
    raises; before, a signal stops the process as usual: nothing trained is lost). `received` names the first
    signal, `stopped_at_step` the step stopped at, `checkpointed` whether that step's checkpoint was written."""

    def __init__(self, signal_names: list[str]):
        self.signals = [getattr(signal, name) for name in signal_names]
        self.received: str | None = None
        self.stopped_at_step: int | None = None
        self.checkpointed = False
        self.push_pending = False  # the checkpoint's Hub push outlived `stop_push_grace_seconds`
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is None:  # only a flag: the handler runs between two bytecodes of whatever is running
            self.received = signal.Signals(signum).name

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():  # Python installs handlers there only
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.signals}

    def on_step_end(self, args, state, control, **kwargs):
        if self.signals and any_process(self.received is not None):  # every process stops at the same step
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at_step = state.global_step
            # What transformers does at the end of training must not touch the stop's checkpoint: with
            # `save_total_limit: 1` and `load_best_model_at_end` it deletes every checkpoint but the best (a requeued
            # run would go back there each time), and loading the best model spends the grace time. The run is not
            # finished; the rerun reads its own arguments again.
            args.load_best_model_at_end = False
            args.save_total_limit = None
            logger.warning(
                "%s received: stopping after step %d with a checkpoint; rerun the same command to resume.",
                self.received or "A stop signal (on another process)",
                state.global_step,
            )

    def on_save(self, args, state, control, **kwargs):
        if self.stopped and state.global_step == self.stopped_at_step:
            self.checkpointed = True

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.stopped:  # no epoch-end evaluation or second save of the same step inside the grace time
            control.should_evaluate = False
            control.should_save = not self.checkpointed

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            if previous is not None:  # None: a handler installed from C, which Python cannot reinstall
                signal.signal(sig, previous)
        self._previous = {}

    @property
    def stopped(self) -> bool:
        return self.stopped_at_step is not None
