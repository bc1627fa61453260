"""A stop signal mid-run (SIGTERM, as Slurm sends it on preemption): the current optimizer step finishes, a checkpoint
is written, the process exits with code 75, and the same command resumes and ends where an uninterrupted run ends
(weights and every logged number, 1e-6). A second signal while the stop's checkpoint is written changes nothing.
The two-process versions (DDP, ZeRO-3) are in test_distributed.py and test_deepspeed.py."""

import pytest

from adadpo.config import parse_signal_names
from adadpo.run_folder import RunFolder
from adadpo.training.preemption import PREEMPTED_EXIT_CODE
from tests.helpers.distributed_harness import (
    assert_logs_close,
    assert_weights_close,
    launch,
    read_reports,
    run_and_report,
)
from tests.helpers.runs import step_logs, tiny_run_args


def test_sigterm_checkpoints_exits_75_and_the_same_command_resumes_as_if_uninterrupted(
    tiny_model_dir, pref_jsonl, tmp_path
):
    common = {"loss_type": "alpha_dpo", "max_steps": 5, "save_steps": 100}  # no periodic checkpoint before the stop
    out = tmp_path / "stopped"
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, out, **common)
    stopped = launch(None, argv, tmp_path, sigterm_at_step=2, check=False)
    assert stopped.returncode == PREEMPTED_EXIT_CODE, stopped.stdout[-2000:] + stopped.stderr[-4000:]
    assert "Stopped on SIGTERM after checkpoint-2" in stopped.stdout + stopped.stderr
    assert [p.name for p in RunFolder(out).checkpoints()] == ["checkpoint-2"]
    assert not (out / "model.safetensors").exists() and not RunFolder(out).is_finished()  # not a finished run
    assert not RunFolder(out).staging.exists()

    launch(None, argv, tmp_path)  # the same command: resumes from checkpoint-2
    (resumed,) = read_reports(out, 1)
    _, uninterrupted = run_and_report(tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "whole", **common))
    assert [e["step"] for e in step_logs(resumed)] == [1, 2, 3, 4, 5]
    assert_logs_close(step_logs(resumed), step_logs(uninterrupted), rel=1e-6)
    assert_weights_close(out, tmp_path / "whole", rtol=1e-6)


@pytest.mark.parametrize(
    "text, names",
    [("SIGTERM,SIGUSR1", ["SIGTERM", "SIGUSR1"]), ("usr1, TERM", ["SIGUSR1", "SIGTERM"]), ("none", []), ("", [])],
)
def test_stop_signal_names(text, names):
    assert parse_signal_names(text) == names


@pytest.mark.parametrize("text", ["SIGKILL", "SIGNOPE", "9"])
def test_stop_signals_that_cannot_be_caught_are_refused(text):
    with pytest.raises(ValueError, match="not a signal a process can catch"):
        parse_signal_names(text)
