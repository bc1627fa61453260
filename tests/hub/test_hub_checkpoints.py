"""Checkpoints pushed to the Hub during training (`hub_strategy`) and resume from the Hub, offline: every Hub call goes
to `hub_standin.LocalHub`, a folder per repository, installed as `adadpo.hub.push.HfApi`.

Run as a script, this file is the harness of the tests that train in other processes:
    [accelerate launch ...] tests/hub/test_hub_checkpoints.py HUB_ROOT KILL_STEP <run_adadpo arguments>
trains against the stand-in Hub in HUB_ROOT, writes the optimizer steps each process trained to
`<output_dir>.steps/rank<R>.json`, and SIGKILLs itself once checkpoint-KILL_STEP has been pushed (0: never).
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import httpx2 as httpx  # huggingface_hub 2.x ships its HTTP client as `httpx2`
import pytest
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError
from transformers import TrainerCallback
from transformers.trainer_utils import HubStrategy

import adadpo.hub.push
from adadpo.hub import checkpoints as hub_checkpoints
from adadpo.hub.checkpoints import MODEL_PATTERNS, CheckpointPusher
from adadpo.hub.resume import HubResumeError, check_world_size, resume_checkpoint, resume_from_hub
from tests.helpers.hub_standin import LocalHub
from tests.helpers.runs import (
    StepCounter,
    assert_resumed_run_equals_uninterrupted,
    extra_callbacks,
    harness_env,
    tiny_run_args,
    train,
)
from tests.hub.test_hub import ARG_TOKEN, ENV_TOKEN, REPO_ID, assert_no_token


MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
RESUME_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "adadpo_counters.json")


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    hub = LocalHub(tmp_path / "hub")
    monkeypatch.setattr(adadpo.hub.push, "HfApi", hub.api_class)
    return hub


def hub_args(model_dir, data_path, output_dir, strategy="checkpoint", **overrides) -> list[str]:
    return tiny_run_args(
        model_dir, data_path, output_dir, push_to_hub=True, hub_model_id=REPO_ID, hub_strategy=strategy,
        hub_token=ARG_TOKEN, **{"max_steps": 4, "save_steps": 2, **overrides},
    )  # fmt: skip


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def checkpoint_commits(hub: LocalHub) -> list[dict]:
    return [c for c in hub.commits if c["message"].startswith("Training in progress, step ")]


def commit_step(commit: dict) -> int:
    return int(commit["message"].rsplit(" ", 1)[-1])


def pushed_step(hub: LocalHub, folder="last-checkpoint") -> int | None:
    state = hub.repo(REPO_ID) / folder / "trainer_state.json"
    return json.loads(state.read_text())["global_step"] if state.exists() else None


# ---- What each strategy pushes ---------------------------------------------------------------------------------

EXPECTED_FOLDERS = {  # transformers' `hub_strategy` documentation, for checkpoints 2 and 4
    "every_save": set(),
    "checkpoint": {"last-checkpoint"},
    "all_checkpoints": {"checkpoint-2", "checkpoint-4"},
}


@pytest.mark.parametrize("strategy", sorted(EXPECTED_FOLDERS))
def test_hub_strategy_pushes_what_transformers_documents(
    strategy, run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, local_hub, caplog
):
    out = tmp_path / "out"
    train(run_adadpo, hub_args(tiny_model_dir, pref_jsonl, out, strategy))
    repo = local_hub.repo(REPO_ID)

    assert {p.name for p in repo.iterdir() if p.is_dir()} == EXPECTED_FOLDERS[strategy]
    for folder in EXPECTED_FOLDERS[strategy]:  # each pushed folder is the complete local checkpoint, byte for byte
        local = out / ("checkpoint-4" if folder == "last-checkpoint" else folder)
        assert folder_bytes(repo / folder) == folder_bytes(local), folder
    assert "Final metrics, after 4 optimizer steps" in (repo / "README.md").read_text()
    assert local_hub.commits[-1]["message"] == "AdaDPO run: adadpo"  # the final push lands last

    commits = checkpoint_commits(local_hub)
    assert commit_step(commits[-1]) == 4 and {commit_step(c) for c in commits} <= {2, 4}
    for commit in commits:  # each push: the model and its card at the root, with or without the checkpoint
        step, files = commit_step(commit), commit["files"]
        local = folder_bytes(out / f"checkpoint-{step}")
        assert {name: files[name] for name in MODEL_FILES} == {name: local[name] for name in MODEL_FILES}
        assert not set(RESUME_FILES) & set(files)  # resume state goes with the checkpoint folder only
        card = files["README.md"].decode()
        assert f"Checkpoint at step {step} of 4" in card and "| loss |" in card and "| rewards/margins |" in card
        folder = {"checkpoint": "last-checkpoint", "all_checkpoints": f"checkpoint-{step}"}.get(strategy)
        if folder is not None:
            assert {k.split("/", 1)[1]: v for k, v in files.items() if k.startswith(f"{folder}/")} == local
        assert not any(".checkpoint-staging" in name or ".hub-push" in name for name in files)
    assert all(c["token"] == ARG_TOKEN for c in local_hub.commits)  # the recipe's `hub_token` wins over HF_TOKEN
    assert not (out / ".hub-push").exists() and not (out / ".checkpoint-staging").exists()
    assert_no_token(local_hub.root, caplog.text)
    assert_no_token(out)


# ---- Queueing: one push in flight, the newest supersedes a queued one --------------------------------------------


def _fake_checkpoint(out: Path, step: int) -> Path:
    folder = out / f"checkpoint-{step}"
    (folder / f"global_step{step}").mkdir(parents=True)
    (folder / f"global_step{step}" / "shard.pt").write_text(f"shard {step}")
    for name in ("model.safetensors", "optimizer.pt"):
        (folder / name).write_text(f"{name} {step}")
    return folder


@pytest.mark.parametrize("strategy", ["checkpoint", "all_checkpoints"])
def test_one_push_in_flight_and_the_newest_checkpoint_supersedes_a_queued_one(
    strategy, local_hub, tmp_path, monkeypatch
):
    """Push 1 hangs on the network while checkpoints 2 and 3 are saved, and checkpoint 1 is rotated out locally
    (`save_total_limit`). Then: push 1 completes from its snapshot; 2 is skipped for 3 (`checkpoint`), or goes out
    in the same commit as 3 (`all_checkpoints`); stale files of `last-checkpoint/` are deleted."""
    monkeypatch.setattr(
        hub_checkpoints, "build_model_card", lambda trainer, checkpoint_step: ModelCard("---\nlicense: mit\n---\ncard")
    )
    in_flight, release = threading.Event(), threading.Event()
    real_commit = local_hub.commit

    def slow_commit(*args):
        in_flight.set()
        assert release.wait(60)
        real_commit(*args)

    monkeypatch.setattr(local_hub, "commit", slow_commit)
    out = tmp_path / "out"
    pusher = CheckpointPusher(REPO_ID, HubStrategy(strategy), str(out))
    for step in (1, 2, 3):
        pusher.push(SimpleNamespace(state=SimpleNamespace(global_step=step)), str(_fake_checkpoint(out, step)))
        assert in_flight.wait(60)
    shutil.rmtree(out / "checkpoint-1")
    release.set()
    pusher.finish()

    assert [commit_step(c) for c in local_hub.commits] == [1, 3]
    repo = local_hub.repo(REPO_ID)
    if strategy == "checkpoint":
        assert folder_bytes(repo / "last-checkpoint") == folder_bytes(out / "checkpoint-3")
        assert "last-checkpoint/global_step1/shard.pt" in local_hub.commits[1]["deleted"]
    else:
        assert {p.name for p in repo.iterdir() if p.is_dir()} == {"checkpoint-1", "checkpoint-2", "checkpoint-3"}
        assert (repo / "checkpoint-1" / "optimizer.pt").read_text() == "optimizer.pt 1"
    assert (repo / "model.safetensors").read_text() == "model.safetensors 3"
    assert not (out / ".hub-push").exists()


def test_only_the_model_goes_to_the_repository_root():
    """`MODEL_PATTERNS` picks the model from a checkpoint of any layout: plain, sharded weights, PEFT, DeepSpeed,
    FSDP; never resume state."""
    from huggingface_hub.utils import filter_repo_objects

    model = [*MODEL_FILES, "chat_template.jinja", "training_args.bin", "special_tokens_map.json", "tokenizer.model",
             "model-00001-of-00002.safetensors", "model.safetensors.index.json", "adapter_config.json",
             "adapter_model.safetensors", "vocab.json", "merges.txt"]  # fmt: skip
    state = [*RESUME_FILES, "alpha_margin_normalizer.json", "rng_state_1.pth", "scaler.pt", "latest",
             "zero_to_fp32.py", "global_step4/zero_pp_rank_0_mp_rank_00_optim_states.pt",
             "global_step4/zero_pp_rank_0_mp_rank_00_model_states.pt", "optimizer.bin",
             "optimizer_0/__0_0.distcp", "pytorch_model_fsdp_0/__0_0.distcp", "README.md"]  # fmt: skip
    assert set(filter_repo_objects([*model, *state], allow_patterns=MODEL_PATTERNS)) == set(model)


# ---- A failed push ---------------------------------------------------------------------------------------------


def _bad_token():
    request = httpx.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(
        f"401 Client Error: Unauthorized (token {ARG_TOKEN})", response=httpx.Response(401, request=request)
    )


class LocalCheckpointHashes(TrainerCallback):
    """Every local checkpoint's bytes right after it is saved; after the first save, wait for its push to have
    failed (it runs in the background), so that the next save comes after the failure."""

    def __init__(self, out: Path, caplog):
        self.out, self.caplog, self.saved = out, caplog, {}

    def on_save(self, args, state, control, **kwargs):
        self.saved[state.global_step] = folder_bytes(self.out / f"checkpoint-{state.global_step}")
        deadline = time.monotonic() + 60
        while len(self.saved) == 1 and not push_warnings(self.caplog):
            assert time.monotonic() < deadline, "the first push neither failed nor warned"
            time.sleep(0.02)


def push_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "adadpo.hub.checkpoints" and r.levelname == "WARNING"]


@pytest.mark.parametrize(
    ("failing_call", "error", "reason"),
    [
        ("create_repo", _bad_token, "401 Client Error: Unauthorized (token ***)"),
        ("create_commit", lambda: httpx.ConnectError("[Errno -3] Temporary failure"), "[Errno -3] Temporary failure"),
    ],
    ids=["bad_token", "network"],
)
def test_failed_push_warns_once_keeps_training_and_the_next_save_pushes(
    failing_call, error, reason, run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, local_hub, caplog
):
    """`all_checkpoints`, so that the retry shows: checkpoint-2 goes out with the next save's push."""
    out = tmp_path / "out"
    local_hub.fail[failing_call] = [error()]  # the push of checkpoint-2 fails
    hashes = LocalCheckpointHashes(out, caplog)
    with extra_callbacks(hashes):
        train(run_adadpo, hub_args(tiny_model_dir, pref_jsonl, out, "all_checkpoints", max_steps=6))

    assert push_warnings(caplog) == [
        f"Pushing checkpoint-2 to the Hub repo {REPO_ID!r} failed: {reason}. Training goes on; the local checkpoint "
        "is unchanged and the next save pushes again."
    ]
    commits = checkpoint_commits(local_hub)
    assert {name.split("/")[0] for name in commits[0]["files"]} >= {"checkpoint-2", "checkpoint-4"}  # the retry
    assert commit_step(commits[0]) == 4 and commit_step(commits[-1]) == 6
    for step, saved in hashes.saved.items():  # local checkpoints untouched by the pushes, the failed one included
        assert folder_bytes(out / f"checkpoint-{step}") == saved, step
        assert folder_bytes(local_hub.repo(REPO_ID) / f"checkpoint-{step}") == saved, step
    assert sorted(hashes.saved) == [2, 4, 6]
    assert_no_token(local_hub.root, caplog.text)
    assert_no_token(out)


# ---- Resume from the Hub ---------------------------------------------------------------------------------------


def test_kill_after_a_pushed_checkpoint_then_resume_from_the_hub_on_an_empty_output_dir(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, local_hub
):
    """alpha-DPO, as the local SIGKILL test: the normalizer, counters, RNG and data order travel through the Hub."""
    common = {"loss_type": "alpha_dpo", "max_steps": 6, "save_steps": 3, "seed": 3}
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    env = harness_env()
    argv = hub_args(tiny_model_dir, pref_jsonl, killed, **common)
    proc = subprocess.run(
        [sys.executable, __file__, str(local_hub.root), "3", *argv],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert pushed_step(local_hub) == 3
    shutil.rmtree(killed)  # a fresh machine

    counter = StepCounter()
    with extra_callbacks(counter):
        resumed = train(run_adadpo, [*argv, "--resume_from_checkpoint=hub"])
    assert counter.steps == [4, 5, 6]  # it resumed from the Hub's step 3; it did not start over
    uninterrupted = train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, whole, **common))
    assert_resumed_run_equals_uninterrupted(resumed, killed, uninterrupted, whole, last_step=6)
    assert pushed_step(local_hub) == 6  # the resumed run goes on pushing
    assert_no_token(local_hub.root, proc.stdout, proc.stderr)
    assert_no_token(killed)


def _deepspeed_checkpoint(repo: Path, ranks: int = 2):
    folder = repo / "last-checkpoint"
    (folder / "global_step2").mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    for rank in range(ranks):
        (folder / "global_step2" / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_text("shard")
        (folder / "global_step2" / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt").write_text("shard")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_checkpoint", r"holds no pushed checkpoint \(`last-checkpoint/` or `checkpoint-N/`\).*hub_strategy"),
        ("no_repo", r"could not read the Hub repo 'someone/adadpo-tiny': 404"),
        ("deepspeed_world_size", r"written by 2 processes .* but this run has 1.*`--num_processes 2`"),
    ],
)
def test_resume_from_the_hub_fails_clearly_before_anything_is_written(
    case, message, run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, local_hub
):
    if case != "no_repo":
        local_hub.repo(REPO_ID).mkdir(parents=True)
        (local_hub.repo(REPO_ID) / "README.md").write_text("a model, no checkpoint")
    if case == "deepspeed_world_size":
        _deepspeed_checkpoint(local_hub.repo(REPO_ID))
    out = tmp_path / "out"
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, out, hub_model_id=REPO_ID, resume_from_checkpoint="hub")
    with pytest.raises(HubResumeError, match=message):
        train(run_adadpo, argv)
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


@pytest.mark.parametrize(("shards", "processes"), [(1, 2), (2, 1), (2, 4)])
def test_resume_from_the_hub_refuses_a_deepspeed_checkpoint_of_any_other_process_count(
    tmp_path, local_hub, shards, processes
):
    """More processes than the checkpoint's shards is refused too, not only fewer: DeepSpeed re-partitions the ZeRO
    optimizer shards in neither direction."""
    _deepspeed_checkpoint(local_hub.repo(REPO_ID), ranks=shards)
    out = tmp_path / "out"
    args = SimpleNamespace(  # process 0 of a launch of `processes`
        hub_model_id=REPO_ID, hub_revision=None, output_dir=str(out), resume_from_checkpoint="hub",
        world_size=processes, should_save=True, save_on_each_node=False,
        main_process_first=lambda **kwargs: contextlib.nullcontext(),
    )  # fmt: skip
    with pytest.raises(
        HubResumeError, match=rf"by {shards} processes .* this run has {processes}.*processes {shards}`"
    ):
        resume_from_hub(args)
    assert not out.exists()


# ---- resume_from_checkpoint: auto (a requeued job runs the same command) -----------------------------------------


def _resume_args(out: Path, asked, **overrides):
    return SimpleNamespace(**{  # process 0 of one
        "hub_model_id": REPO_ID, "hub_revision": None, "hub_strategy": "checkpoint", "output_dir": str(out),
        "resume_from_checkpoint": asked, "overwrite_output_dir": False, "world_size": 1, "should_save": True,
        "save_on_each_node": False, "main_process_first": lambda **kwargs: contextlib.nullcontext(), **overrides,
    })  # fmt: skip


def _checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_text(f"weights of step {step}")
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_auto_resume_takes_the_newest_complete_local_checkpoint_else_the_hubs_else_starts_fresh(tmp_path, local_hub):
    out = tmp_path / "out"
    assert resume_checkpoint(_resume_args(out, "auto"), push_to_hub=True) is None  # no repo yet, nothing local
    _checkpoint(local_hub.repo(REPO_ID) / "checkpoint-3", 3)
    assert resume_checkpoint(_resume_args(out, "auto"), push_to_hub=False) is None  # the Hub only when pushing
    downloaded = resume_checkpoint(_resume_args(out, "auto"), push_to_hub=True)
    assert downloaded == str(out / "checkpoint-3")
    assert (out / "checkpoint-3" / "model.safetensors").read_text() == "weights of step 3"
    _checkpoint(out / "checkpoint-5", 5)
    _checkpoint(out / "checkpoint-7", 7, complete=False)  # e.g. copied in part by hand: skipped
    for asked in ("auto", None):
        assert resume_checkpoint(_resume_args(out, asked), push_to_hub=True) == str(out / "checkpoint-5")
    assert resume_checkpoint(_resume_args(out, None, overwrite_output_dir=True), push_to_hub=True) is None


def test_auto_resume_stops_when_the_hub_cannot_be_read(tmp_path, local_hub, monkeypatch):
    """Starting over would silently train over the pushed progress: an unreadable Hub is an error, not a fresh start."""

    def unreachable(*args, **kwargs):
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(local_hub.api_class, "list_repo_files", unreachable)
    with pytest.raises(HubResumeError, match=r"`resume_from_checkpoint: auto` could not read the Hub repo"):
        resume_checkpoint(_resume_args(tmp_path / "out", "auto"), push_to_hub=True)


def test_auto_resume_with_overwrite_output_dir_is_refused(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "out", resume_from_checkpoint="auto",
                         overwrite_output_dir=True)  # fmt: skip
    with pytest.raises(ValueError, match="`resume_from_checkpoint: auto` continues the run"):
        train(run_adadpo, argv)
    assert not (tmp_path / "out").exists()


def _launch_harness(accelerate_config, hub: LocalHub, argv, cwd, timeout=600):
    """`accelerate launch` this file. On a timeout the launcher and every rank are killed (the ranks run in sessions
    of their own and would outlive the launcher, holding its pipes open), so a hang fails the test and leaves nothing
    behind."""
    env = harness_env()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config), __file__]
    proc = subprocess.Popen(
        [*cmd, str(hub.root), "0", *argv], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        import psutil

        launcher = psutil.Process(proc.pid)
        for process in [*launcher.children(recursive=True), launcher]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        out, err = proc.communicate()
        pytest.fail(f"the launch hung for {timeout} s:\n{out[-3000:]}{err[-6000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-6000:]


def _trained_steps(output_dir: Path, rank: int) -> list[int]:
    return json.loads((output_dir.with_suffix(".steps") / f"rank{rank}.json").read_text())


@pytest.mark.slow
def test_deepspeed_checkpoint_goes_through_the_hub_with_every_rank_shard(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, local_hub
):
    """ZeRO-3 over 2 processes: `last-checkpoint/` holds both ranks' shards; resuming it with 1 process is refused
    before a file is written; 2 processes on an empty `output_dir` download it and train only the steps left."""
    from tests.helpers.distributed_harness import deepspeed_launch_config

    config = deepspeed_launch_config(tmp_path, 3)
    common = {"global_batch_size": 4, "per_device_train_batch_size": 2, "loss_type": "alpha_dpo"}
    first, second = tmp_path / "first", tmp_path / "second"
    _launch_harness(config, local_hub, hub_args(tiny_model_dir, pref_jsonl, first, **common), tmp_path)
    pushed = local_hub.repo(REPO_ID) / "last-checkpoint"
    assert folder_bytes(pushed) == folder_bytes(first / "checkpoint-4")
    assert {p.name for p in (pushed / "global_step4").glob("*optim_states.pt")} == {
        f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" for rank in (0, 1)
    }

    one_process = hub_args(tiny_model_dir, pref_jsonl, second, max_steps=6, **common)
    with pytest.raises(HubResumeError, match=r"written by 2 processes .* this run has 1"):
        train(run_adadpo, [*one_process, "--resume_from_checkpoint=hub"])
    assert not second.exists() or not [p for p in second.rglob("*") if p.is_file()]

    _launch_harness(config, local_hub, [*one_process, "--resume_from_checkpoint=hub"], tmp_path)
    assert _trained_steps(second, 0) == _trained_steps(second, 1) == [5, 6]
    # The download is the first run's checkpoint byte for byte (so test_deepspeed's local ZeRO-3 resume test covers
    # what follows), kept as a local checkpoint.
    assert folder_bytes(second / "checkpoint-4") == folder_bytes(first / "checkpoint-4")
    assert pushed_step(local_hub) == 6


def test_zero_shard_names_are_the_ones_deepspeed_writes():
    """`check_world_size` counts files by DeepSpeed's private naming (`DeepSpeedEngine._get_rank_zero_ckpt_name`):
    this fails if a DeepSpeed upgrade renames them."""
    engine_module = pytest.importorskip("deepspeed.runtime.engine")
    engine_cls = engine_module.DeepSpeedEngine
    engine = SimpleNamespace()
    engine._get_zero_ckpt_prefix = partial(engine_cls._get_zero_ckpt_prefix, engine)
    for bf16 in (False, True):
        names = [
            os.path.relpath(engine_cls._get_rank_zero_ckpt_name(engine, "ckpt", "global_step2", 0, rank, bf16), "ckpt")
            for rank in range(3)
        ]
        check_world_size(names, 3, "checkpoint")
        with pytest.raises(HubResumeError, match="written by 3 processes"):
            check_world_size(names, 2, "checkpoint")


if __name__ == "__main__":
    from adadpo.cli import run_adadpo

    hub_root, kill_step, run_argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    hub = LocalHub(hub_root)
    adadpo.hub.push.HfApi = hub.api_class

    class KillAfterPush(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step != kill_step or not kill_step:
                return
            deadline = time.monotonic() + 120
            while kill_step not in {commit_step(c) for c in checkpoint_commits(hub)}:
                assert time.monotonic() < deadline, "checkpoint push did not complete"
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)

    if int(os.environ.get("RANK", "0")) and "--resume_from_checkpoint=hub" in run_argv:
        # The race of a multi-process resume, made certain: this process looks for local checkpoints only once
        # process 0 has downloaded the Hub's into the run folder (it must still join process 0's barrier).
        import adadpo.hub.resume

        def newest_local_checkpoint_after_the_download(folder, real=adadpo.hub.resume.newest_local_checkpoint):
            deadline = time.monotonic() + 120
            while not list(Path(folder).glob("checkpoint-*")):
                assert time.monotonic() < deadline, "process 0 did not download the checkpoint"
                time.sleep(0.05)
            return real(folder)

        adadpo.hub.resume.newest_local_checkpoint = newest_local_checkpoint_after_the_download
        output_dir = next(arg.split("=", 1)[1] for arg in run_argv if arg.startswith("--output_dir="))
        Path(output_dir).mkdir(parents=True, exist_ok=True)  # empty: so that this process does look

    counter = StepCounter()
    with extra_callbacks(KillAfterPush(), counter):
        trainer = train(run_adadpo, run_argv)
    steps_dir = Path(trainer.args.output_dir).with_suffix(".steps")
    steps_dir.mkdir(exist_ok=True)
    (steps_dir / f"rank{trainer.accelerator.process_index}.json").write_text(json.dumps(counter.steps))
    if kill_step:
        sys.exit("the harness was not killed")
