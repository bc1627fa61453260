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
    """The handlers live from `on_train_begin` to `on_train_end` (before, a signal stops the process as usual:
    nothing trained is lost); `received` names the first signal, `stopped_at_step` the step checkpointed for it."""

    def __init__(self, signal_names: list[str]):
        self.signals = [getattr(signal, name) for name in signal_names]
        self.received: str | None = None
        self.stopped_at_step: int | None = None
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
            logger.warning(
                "%s received: stopping after step %d with a checkpoint; rerun the same command to resume.",
                self.received or "A stop signal (on another process)",
                state.global_step,
            )

    def on_train_end(self, args, state, control, **kwargs):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    @property
    def stopped(self) -> bool:
        return self.stopped_at_step is not None
