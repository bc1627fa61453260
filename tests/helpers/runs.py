"""Helpers shared by the tests that run `scripts/run_adadpo.py`'s `main` (`adadpo.cli.run_adadpo`): its arguments for
a tiny CPU run, the environment of a subprocess that runs it, callbacks added to the trainer it builds, its logged
steps, and the comparison of a resumed run with an uninterrupted one."""

import contextlib
import json
import os
import random
from pathlib import Path
from unittest import mock

import pytest
import torch
import transformers.trainer
from safetensors.torch import load_file
from transformers import TrainerCallback

from adadpo.run_folder import NORMALIZER_FILE
from adadpo.testing import make_preference_rows
from adadpo.training.trainer import AdaDPOTrainer


REPO_ROOT = Path(__file__).resolve().parents[2]


def preference_rows_with_margin(n: int, seed: int = 0, **kwargs):
    rng = random.Random(seed)
    rows = make_preference_rows(n, seed=seed, **kwargs)
    for row in rows:
        row["reward_margin"] = rng.uniform(0.0, 2.0)  # MADPO reads it; other losses ignore it
    return rows


def harness_env(**extra: str) -> dict[str, str]:
    """Environment of a subprocess that runs a test file as a per-process harness script: offline, quiet, one
    thread, and the `tests` package importable (pytest puts the repository root on sys.path; a script does not)."""
    paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "OMP_NUM_THREADS": "1",
    }
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in paths if p), **extra}


def tiny_run_args(model_dir, data_path, output_dir, **overrides) -> list[str]:
    """Command-line arguments of a 3-step CPU run on the tiny model."""
    args = {
        "model_name_or_path": str(model_dir),
        "dataset_name": str(data_path),
        "output_dir": str(output_dir),
        "max_steps": 3,
        "per_device_train_batch_size": 2,
        "learning_rate": 1.0e-3,
        "max_length": 64,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 3,
        "report_to": "none",
        "bf16": False,
        "gradient_checkpointing": False,
        "use_cpu": True,
        "seed": 0,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "loss_type": "adadpo",
    }
    args.update(overrides)
    return [f"--{key}={value}" for key, value in args.items() if value is not None]


def train(run_adadpo, argv):
    return run_adadpo.main(*run_adadpo.parse_args(argv), argv=argv)


class OutOfMemoryAbove(TrainerCallback):
    """The test hook of the out-of-memory tests: the policy's forward in training raises the real
    `torch.OutOfMemoryError` when its `input_ids` hold more than `tokens` entries (padding included, as memory counts
    them), on `ranks` only. (Evaluation, without a graph, is left alone: it is not split.)"""

    def __init__(self, tokens: int, ranks=None):
        self.tokens, self.ranks, self.raised = tokens, ranks, 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.ranks is not None and args.process_index not in self.ranks:
            return

        def check(module, forward_args, forward_kwargs):
            input_ids = forward_kwargs.get("input_ids", forward_args[0] if forward_args else None)
            if module.training and input_ids is not None and input_ids.numel() > self.tokens:
                self.raised += 1
                raise torch.OutOfMemoryError(f"CUDA out of memory (injected: {input_ids.numel()} > {self.tokens})")

        model.register_forward_pre_hook(check, with_kwargs=True)


@contextlib.contextmanager
def extra_callbacks(*callbacks):
    """Every Trainer built inside gets these callbacks too (`main` builds its trainer itself)."""
    with mock.patch.object(
        transformers.trainer, "DEFAULT_CALLBACKS", [*transformers.trainer.DEFAULT_CALLBACKS, *callbacks]
    ):
        yield


def step_logs(run) -> list[dict]:
    """The per-step training logs of a trainer, a run folder, or a `distributed_harness` report."""
    if isinstance(run, AdaDPOTrainer):
        history = run.state.log_history
    elif isinstance(run, dict):
        history = run["log_history"]
    else:
        history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    return [entry for entry in history if "loss" in entry]


class WeightSnapshots(TrainerCallback):
    """Weights after every optimizer step, by global step."""

    def __init__(self):
        self.by_step = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.by_step[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}


class StepCounter(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def assert_logs_equal(resumed: list[dict], whole: list[dict]):
    timing = {"train_runtime", "train_samples_per_second", "train_steps_per_second"}
    assert [e["step"] for e in resumed] == [e["step"] for e in whole]
    for a, b in zip(resumed, whole, strict=True):
        assert set(a) == set(b)
        for key in set(a) - timing:
            assert a[key] == pytest.approx(b[key], abs=1e-6, rel=0), (a["step"], key)


def assert_resumed_run_equals_uninterrupted(resumed, resumed_dir, uninterrupted, whole_dir, last_step):
    """Same final weights and logged metrics (1e-6), and the same alpha-DPO normalizer state."""
    a, b = load_file(resumed_dir / "model.safetensors"), load_file(whole_dir / "model.safetensors")
    for name in b:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0, msg=name)
    assert_logs_equal(step_logs(resumed), step_logs(uninterrupted))
    norm_a = json.loads((resumed_dir / f"checkpoint-{last_step}" / NORMALIZER_FILE).read_text())
    norm_b = json.loads((whole_dir / f"checkpoint-{last_step}" / NORMALIZER_FILE).read_text())
    assert norm_a["num_updates"] == norm_b["num_updates"] == last_step
    assert norm_a["mean"] == pytest.approx(norm_b["mean"], abs=1e-9) and norm_a["std"] == pytest.approx(norm_b["std"])
