"""Faults during training: non-finite steps, NaN weights, SIGKILL + resume, crashes while writing a checkpoint or
the reference cache. Everything runs the real `scripts/run_adadpo.py` `main` on the tiny CPU model.

Run as a script, this file is the harness of the SIGKILL test:
    python tests/training/test_reliability_faults.py KILL_STEP <run_adadpo arguments>
trains and SIGKILLs itself right after checkpoint-KILL_STEP is saved (no cleanup, no atexit: a hard crash).
"""

import errno
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from adadpo.losses import PreferenceLoss
from adadpo.run_folder import COUNTERS_FILE, NORMALIZER_FILE
from adadpo.training.checkpointing import CheckpointWriteError
from adadpo.training.nonfinite import NonFiniteStepsError
from adadpo.training.ref_cache import ReferenceLogpsCache
from adadpo.training.trainer import AdaDPOTrainer
from tests.helpers.runs import (
    StepCounter,
    WeightSnapshots,
    assert_resumed_run_equals_uninterrupted,
    extra_callbacks,
    harness_env,
    step_logs,
    tiny_run_args,
    train,
)


def poisoned_loss(bad_calls: set[int], kind: str):
    """`PreferenceLoss.__call__` that returns a non-finite loss ("loss") or a finite loss whose gradient is NaN
    ("grad") on the given calls (1-based; one call per optimizer step here: no gradient accumulation, no eval)."""
    calls = itertools.count(1)
    original = PreferenceLoss.__call__

    def poisoned(self, **kwargs):
        out = original(self, **kwargs)
        if next(calls) in bad_calls:
            if kind == "loss":
                out.losses = out.losses * float("nan")
            else:  # sqrt(|x - sg(x)|) is 0, but its derivative at 0 is inf * 0 = NaN
                x = kwargs["policy_chosen_logps"]
                out.losses = out.losses + (x - x.detach()).abs().sqrt()
        return out

    return poisoned


# ---- Non-finite loss / gradient -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_nonfinite_step_is_skipped_with_warning_and_metric(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, caplog, kind
):
    snapshots = WeightSnapshots()
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "out", loss_type="simpo", max_steps=3)
    with mock.patch.object(PreferenceLoss, "__call__", poisoned_loss({2}, kind)), extra_callbacks(snapshots):
        trainer = train(run_adadpo, argv)

    after = snapshots.by_step
    for name in after[1]:  # step 2 applied nothing (weights bit-identical); steps 1 and 3 did train
        assert torch.equal(after[2][name], after[1][name]), name
    assert any(not torch.equal(after[3][n], after[2][n]) for n in after[2])
    assert [e["nonfinite_steps"] for e in step_logs(trainer)] == [0, 1, 1]  # the skipped step counts itself
    assert "Non-finite gradient: optimizer step skipped (1 in a row, 1 in total)" in caplog.text
    for folder in ("checkpoint-3", "."):
        weights = load_file(tmp_path / "out" / folder / "model.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values()), folder


def test_nonfinite_steps_in_a_row_stop_with_a_clear_error(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    out = tmp_path / "out"
    argv = tiny_run_args(
        tiny_model_dir, pref_jsonl, out, loss_type="simpo", max_steps=6, save_steps=1, max_nonfinite_steps=2
    )
    with (
        mock.patch.object(PreferenceLoss, "__call__", poisoned_loss({2, 3, 4, 5, 6}, "loss")),
        pytest.raises(NonFiniteStepsError, match=r"2 optimizer steps in a row .*`max_nonfinite_steps` = 2.*Lower"),
    ):
        train(run_adadpo, argv)
    # Stopped at step 3, before its checkpoint; every checkpoint on disk holds finite weights.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert not (out / "model.safetensors").exists()
    for folder in out.glob("checkpoint-*"):
        assert all(torch.isfinite(t).all() for t in load_file(folder / "model.safetensors").values())


def test_isolated_nonfinite_steps_do_not_add_up_to_a_stop(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, caplog):
    """`max_nonfinite_steps` counts skipped steps in a row: a good step in between restarts the count, so two bad
    steps apart never stop a run with a limit of 2 (a count never reset would stop it at step 4)."""
    argv = tiny_run_args(
        tiny_model_dir, pref_jsonl, tmp_path / "out", loss_type="simpo", max_steps=5, max_nonfinite_steps=2
    )
    with mock.patch.object(PreferenceLoss, "__call__", poisoned_loss({2, 4}, "loss")):
        trainer = train(run_adadpo, argv)
    assert trainer.state.global_step == 5
    assert [e["nonfinite_steps"] for e in step_logs(trainer)] == [0, 1, 1, 2, 2]
    assert "optimizer step skipped (1 in a row, 2 in total)" in caplog.text


class PoisonWeightsAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")


def test_checkpoint_with_nan_weights_is_refused(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    out = tmp_path / "out"
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, out, loss_type="simpo", max_steps=3, save_steps=1)
    with (
        extra_callbacks(PoisonWeightsAt(2)),
        pytest.raises(NonFiniteStepsError, match="Refusing to save a checkpoint"),
    ):
        train(run_adadpo, argv)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert all(torch.isfinite(t).all() for t in load_file(out / "checkpoint-1" / "model.safetensors").values())


# ---- SIGKILL after a checkpoint, then resume --------------------------------------------------------------------


def test_sigkill_after_checkpoint_then_resume_equals_uninterrupted_run(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path
):
    """alpha-DPO: its margin normalizer (EMA state) and the data order must survive the restart exactly."""
    common = {"loss_type": "alpha_dpo", "max_steps": 6, "save_steps": 3, "seed": 3}
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    env = harness_env()
    proc = subprocess.run(
        [sys.executable, __file__, "3", *tiny_run_args(tiny_model_dir, pref_jsonl, killed, **common)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert (killed / "checkpoint-3" / NORMALIZER_FILE).exists()
    assert not (killed / "checkpoint-6").exists() and not (killed / "model.safetensors").exists()

    counter = StepCounter()
    with extra_callbacks(counter):
        resumed = train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, killed, **common))
    assert counter.steps == [4, 5, 6]  # it resumed; it did not start over
    uninterrupted = train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, whole, **common))

    assert_resumed_run_equals_uninterrupted(resumed, killed, uninterrupted, whole, last_step=6)


class CrashAfterSave(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError("crash after the checkpoint (injected)")


def test_resume_restores_the_count_of_skipped_steps(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    """A step skipped before the checkpoint still counts after the resume: `nonfinite_steps` travels in the
    checkpoint's counters (a resume that did not restore it would log 0 from the first resumed step on)."""
    out = tmp_path / "out"
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, out, loss_type="simpo", max_steps=4, save_steps=2)
    with (
        mock.patch.object(PreferenceLoss, "__call__", poisoned_loss({2}, "loss")),
        extra_callbacks(CrashAfterSave(2)),
        pytest.raises(RuntimeError, match="injected"),
    ):
        train(run_adadpo, argv)
    assert json.loads((out / "checkpoint-2" / COUNTERS_FILE).read_text())["nonfinite_steps"] == 1

    counter = StepCounter()
    with extra_callbacks(counter):
        resumed = train(run_adadpo, argv)  # no bad step this time
    assert counter.steps == [3, 4]
    assert [(e["step"], e["nonfinite_steps"]) for e in step_logs(resumed)] == [(1, 0), (2, 1), (3, 1), (4, 1)]
    assert json.loads((out / "checkpoint-4" / COUNTERS_FILE).read_text())["nonfinite_steps"] == 1


# ---- A crash while writing a checkpoint or the reference cache --------------------------------------------------


def _crash_in_rng_state(original):
    def crash(self, output_dir):
        if self.state.global_step == 4:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return original(self, output_dir)

    return mock.patch.object(AdaDPOTrainer, "_save_rng_state", crash)


def _crash_in_normalizer_file(original):
    def crash(path, payload):
        if path.endswith(NORMALIZER_FILE) and "checkpoint-4" in path:
            Path(path).write_text('{"mean": 0.')  # half-written, as a full disk leaves it
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return original(path, payload)

    return mock.patch("adadpo.training.checkpointing.write_json_atomic", crash)


@pytest.mark.parametrize("where", ["transformers_save", "normalizer_file"])
def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, where
):
    """A full disk (ENOSPC) while checkpoint-4 is written: the run stops with a message naming the intact
    checkpoint-2, the staged copy is removed, and with `save_total_limit: 1` the old checkpoint stays until a new one is
    complete; the same command resumes from it and ends where an uninterrupted run ends."""
    import adadpo.training.checkpointing

    out = tmp_path / "out"
    common = {"loss_type": "alpha_dpo", "max_steps": 4, "save_steps": 2, "save_total_limit": 1}
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, out, **common)
    crash = (
        _crash_in_rng_state(AdaDPOTrainer._save_rng_state)
        if where == "transformers_save"
        else _crash_in_normalizer_file(adadpo.training.checkpointing.write_json_atomic)
    )
    with crash, pytest.raises(CheckpointWriteError) as stopped:
        train(run_adadpo, argv)
    message = str(stopped.value)
    assert "No space left on device (injected)" in message and f"{out / 'checkpoint-2'}, is intact" in message
    assert "Free space or lower `save_total_limit`" in message
    assert not (out / ".checkpoint-staging").exists()  # the half-written copy is gone
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    previous = out / "checkpoint-2"
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", NORMALIZER_FILE):
        assert (previous / name).exists(), name
    assert json.loads((previous / "trainer_state.json").read_text())["global_step"] == 2

    counter = StepCounter()
    with extra_callbacks(counter):
        resumed = train(run_adadpo, argv)  # resumes from the intact checkpoint-2
    assert counter.steps == [3, 4]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]  # rotated once complete
    if where == "normalizer_file":  # (one case is enough for the equality)
        whole = tmp_path / "whole"
        uninterrupted = train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, whole, **common))
        assert_resumed_run_equals_uninterrupted(resumed, out, uninterrupted, whole, last_step=4)


def test_best_checkpoint_is_tracked_under_its_final_name(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    """Checkpoints are written to a staging folder and renamed: `best_model_checkpoint` (in memory and in the saved
    trainer state) must name the final folder, so `load_best_model_at_end` and resumes find it."""
    out = tmp_path / "out"
    argv = tiny_run_args(
        tiny_model_dir, pref_jsonl, out, loss_type="simpo", max_steps=2, save_steps=1, eval_strategy="steps",
        eval_steps=1, test_split_size=4, load_best_model_at_end=True, metric_for_best_model="loss",
        save_total_limit=1,
    )  # fmt: skip
    trainer = train(run_adadpo, argv)
    best = trainer.state.best_model_checkpoint
    assert os.path.dirname(best) == str(out) and os.path.isdir(best)
    assert (
        json.loads((out / os.path.basename(best) / "trainer_state.json").read_text())["best_model_checkpoint"] == best
    )


def test_crash_while_writing_the_reference_cache_keeps_the_previous_entry(tmp_path):
    cache = ReferenceLogpsCache(str(tmp_path))
    old = (np.array([-1.0, -2.0, -3.0]), np.array([-4.0, -5.0, -6.0]))
    new = (old[0] - 1.0, old[1] - 1.0)
    cache.save("key", "train", *old)

    def torn_savez(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError("No space left on device (injected)")

    with mock.patch("adadpo.training.ref_cache.np.savez", torn_savez), pytest.raises(OSError, match="injected"):
        cache.save("key", "train", *new)
    chosen, rejected = cache.load("key", "train", 3)  # the previous entry, unchanged
    np.testing.assert_array_equal(chosen, old[0])
    np.testing.assert_array_equal(rejected, old[1])

    # Killed between the data file and its metadata: new data + old checksum is refused, never used as a mix.
    real_replace = os.replace

    def replace_data_only(src, dst):
        if str(dst).endswith(".json"):
            raise OSError("killed (injected)")
        return real_replace(src, dst)

    with (
        mock.patch("adadpo.files.os.replace", replace_data_only),
        pytest.raises(OSError, match="injected"),
    ):
        cache.save("key", "train", *new)
    assert cache.load("key", "train", 3) is None


if __name__ == "__main__":
    from adadpo.cli import run_adadpo

    kill_step, run_argv = int(sys.argv[1]), sys.argv[2:]

    class KillAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == kill_step:
                os.kill(os.getpid(), signal.SIGKILL)

    with extra_callbacks(KillAfterSave()):
        train(run_adadpo, run_argv)
    sys.exit("the harness was not killed")
