"""Checkpoints to the Hub while training goes on (`push_to_hub` + `hub_strategy`), as transformers documents it:

- `every_save`: the model (weights, config, tokenizer) and a model card for that step, at the repository's root;
- `checkpoint`: the same, and the whole latest checkpoint in `last-checkpoint/` (stale files there deleted);
- `all_checkpoints`: the same, and every checkpoint in its own `checkpoint-N/`;
- `end` (transformers' default): nothing during training; the final push of `scripts/run_adadpo.py` only.

Why not transformers' own `Trainer._push_from_checkpoint` (we train with `push_to_hub=False`, so it stays off): it
runs inside `_save_checkpoint`, i.e. on our staging folder before the rename and before our extra state files exist;
it drops a save that comes while a push is in flight instead of queueing the newest; it copies files into the run
folder; `init_hf_repo` raises on a bad token when the trainer is built; and `upload_folder` (huggingface_hub 2.x with
hf_xet) commits a large folder in several commits, so an interrupted push could leave `last-checkpoint/` mixing two
steps. Here each push is one `create_commit` (all of it lands or none), run on `HfApi.run_as_future`'s single
worker thread: training never waits for the network and at most one push is in flight.
"""

import logging
import os
import shutil
import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass

from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.utils import filter_repo_objects
from transformers.trainer_utils import HubStrategy

from adadpo.hub.push import ensure_repo, failure_reason, hub_api, hub_repo_id
from adadpo.run_folder import RunFolder
from adadpo.training.model_card import build_model_card


logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last-checkpoint"  # transformers' folder name for `hub_strategy: checkpoint`
# What goes to the repository's root from a checkpoint: the model alone (transformers' `_push_from_checkpoint` list:
# config, weights and their shards, adapters; plus the tokenizer and training arguments). An allow-list, so that
# resume state in any layout (optimizer.pt, FSDP's optimizer.bin or optimizer_0/, DeepSpeed's global_stepN/, RNG,
# our extra state) only ever goes with the checkpoint folder.
MODEL_PATTERNS = [
    "config.json",
    "generation_config.json",
    "model*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "adapter_*",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "chat_template.*",
    "*processor_config.json",
    "training_args.bin",
]


@dataclass
class _Queued:
    step: int
    name: str  # checkpoint-N
    snapshot: str  # hard-linked copy of the renamed checkpoint folder
    card: bytes  # the model card for this step, built when it was saved


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a filesystem without hard links: copy (blocks training for the copy's time)
        shutil.copy2(src, dst)


def _files(folder: str, allow_patterns=None) -> dict[str, str]:
    """Path in the folder (posix) -> path on disk, for every file, or those matching `allow_patterns`
    (huggingface_hub's fnmatch rules, as `upload_folder` applies them)."""
    found = {
        os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"): os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
    }
    return {rel: found[rel] for rel in filter_repo_objects(sorted(found), allow_patterns=allow_patterns)}


class CheckpointPusher:
    """Pushes each renamed checkpoint in the background. A newer checkpoint supersedes one still queued (with
    `all_checkpoints`, queued ones go out in the newer one's commit). A failed push logs one warning and is retried
    at the next save; local checkpoints are only read."""

    def __init__(self, repo_id: str, strategy: HubStrategy, output_dir: str, private=None, revision=None, token=None):
        self.repo_id, self.strategy, self.private, self.revision = repo_id, strategy, private, revision
        self.token = token  # in memory only
        self.api = hub_api(token)  # its `run_as_future` pool has one thread: pushes run one at a time, in order
        self.snapshot_root = str(RunFolder(output_dir).hub_snapshots)
        self._lock = threading.Lock()
        self._queued: dict[str, _Queued] = {}  # by checkpoint name, oldest first
        self._jobs: list[Future] = []
        self._repo_ready = False

    @classmethod
    def from_args(cls, args, push_to_hub: bool, token=None) -> "CheckpointPusher | None":
        strategy = HubStrategy(args.hub_strategy)
        if not push_to_hub or strategy == HubStrategy.END:
            return None
        return cls(hub_repo_id(args), strategy, args.output_dir, args.hub_private_repo, args.hub_revision, token)

    def push(self, trainer, checkpoint_dir: str) -> None:
        """Queue `checkpoint_dir` (already renamed into place) and return at once. Main process only.

        The push reads a hard-linked snapshot of the folder (no data copied), so `save_total_limit` may rotate the
        checkpoint out while it uploads without pulling files from under it."""
        name, step = os.path.basename(checkpoint_dir), trainer.state.global_step
        snapshot = os.path.join(self.snapshot_root, name)
        try:
            shutil.rmtree(snapshot, ignore_errors=True)  # left by a killed run
            shutil.copytree(checkpoint_dir, snapshot, copy_function=_link_or_copy)
            card = build_model_card(trainer, checkpoint_step=step).content.encode()
        except Exception as error:  # a push must never stop training
            logger.warning("Not pushing %s to the Hub repo %r: %s", name, self.repo_id, error)
            return
        self._enqueue([_Queued(step, name, snapshot, card)])
        self._jobs = [job for job in self._jobs if not job.done()]
        self._jobs.append(self.api.run_as_future(self._push_queued))

    def finish(self, timeout: float | None = None) -> bool:
        """Wait for the pushes in flight or queued; what failed gets one more try (there is no next save). With a
        `timeout` (seconds, after a stop signal): False if they did not all finish by then (nothing is cleaned up:
        the upload thread still reads its snapshot)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        remaining = lambda: None if deadline is None else max(0.0, deadline - time.monotonic())  # noqa: E731
        if wait(self._jobs, timeout=remaining()).not_done:
            return False
        if self._queued and wait([self.api.run_as_future(self._push_queued)], timeout=remaining()).not_done:
            return False
        self._jobs = []
        with self._lock:
            self._drop(self._queued.values())
            self._queued = {}
        shutil.rmtree(self.snapshot_root, ignore_errors=True)
        return True

    # ---- Queue (both threads) and the push itself (the worker thread) ---------------------------------------------

    def _enqueue(self, entries) -> None:
        """Queue new (or failed, for a retry) checkpoints; unless `all_checkpoints`, only the newest stays queued."""
        with self._lock:
            ordered = sorted([*self._queued.values(), *entries], key=lambda queued: queued.step)
            keep = ordered if self.strategy == HubStrategy.ALL_CHECKPOINTS else ordered[-1:]
            self._drop(queued for queued in ordered if queued not in keep)
            self._queued = {queued.name: queued for queued in keep}

    def _drop(self, entries) -> None:
        for entry in entries:
            shutil.rmtree(entry.snapshot, ignore_errors=True)

    def _push_queued(self) -> None:
        with self._lock:
            batch, self._queued = self._queued, {}
        if not batch:  # an earlier job took them
            return
        newest = list(batch.values())[-1]
        try:
            if not self._repo_ready:
                ensure_repo(self.api, self.repo_id, self.private, self.revision)
                self._repo_ready = True
            self.api.create_commit(
                self.repo_id,
                operations=self._operations(list(batch.values())),
                commit_message=f"Training in progress, step {newest.step}",  # transformers' message
                revision=self.revision,
            )
        except Exception as error:  # network, auth, quota: training goes on, the next save pushes again
            logger.warning(
                "Pushing %s to the Hub repo %r failed: %s. Training goes on; the local checkpoint is unchanged and "
                "the next save pushes again.",
                newest.name,
                self.repo_id,
                failure_reason(error, self.token),
            )
            self._enqueue(batch.values())
            return
        self._drop(batch.values())
        logger.info("Pushed %s to the Hub repo %s", newest.name, self.repo_id)

    def _operations(self, batch: list[_Queued]) -> list:
        newest = batch[-1]
        model = _files(newest.snapshot, allow_patterns=MODEL_PATTERNS)
        operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=path) for rel, path in model.items()]
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=newest.card))
        if self.strategy == HubStrategy.EVERY_SAVE:
            return operations
        folders = {LAST_CHECKPOINT: newest} if self.strategy == HubStrategy.CHECKPOINT else {q.name: q for q in batch}
        remote = self.api.list_repo_files(self.repo_id, revision=self.revision)
        for folder, queued in folders.items():
            files = _files(queued.snapshot)
            operations += [CommitOperationAdd(f"{folder}/{rel}", path) for rel, path in files.items()]
            stale = [f for f in remote if f.startswith(f"{folder}/") and f[len(folder) + 1 :] not in files]
            operations += [CommitOperationDelete(path_in_repo=f) for f in stale]  # e.g. the previous global_stepN/
        return operations
