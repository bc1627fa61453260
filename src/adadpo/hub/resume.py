"""Where a run resumes from. `resume_from_checkpoint: hub`: the latest checkpoint pushed to `hub_model_id` (by
`hub_strategy: checkpoint` or `all_checkpoints`), e.g. on a fresh machine with an empty `output_dir`. `auto`: the
newest complete local checkpoint, else the Hub's (when the run pushes checkpoints), else a fresh start, so that the
same command can be requeued unchanged. Unset: the newest complete local checkpoint, else a fresh start.

The checkpoint is downloaded whole (weights, optimizer, scheduler, RNG, trainer state, our extra state) into
`output_dir/checkpoint-N`, through the staging folder, so that an interrupted download is never resumed from and a
later plain relaunch finds it like any local checkpoint. Everything is checked before a file is written."""

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile

from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

from adadpo.files import publish_dir
from adadpo.hub.checkpoints import LAST_CHECKPOINT
from adadpo.hub.push import HubError, failure_reason, hub_api, hub_repo_id
from adadpo.run_folder import CHECKPOINT_PREFIX, TRAINER_STATE, RunFolder
from adadpo.training.agreement import any_process


logger = logging.getLogger(__name__)

HUB_RESUME = "hub"  # the `resume_from_checkpoint` value that means "from the Hub"
AUTO_RESUME = "auto"  # ... "from wherever the newest checkpoint is, or from scratch"
# One ZeRO optimizer shard per data-parallel rank (DeepSpeed's `_get_rank_zero_ckpt_name`).
_ZERO_SHARD = re.compile(r"(?:^|/)(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt$")
_CHECKPOINT_FOLDER = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")


class HubResumeError(HubError):
    pass


def check_world_size(files, world_size: int, source: str) -> None:
    """A DeepSpeed checkpoint holds one optimizer shard per rank, and DeepSpeed cannot re-partition them."""
    ranks = {int(match.group(1)) for f in files if (match := _ZERO_SHARD.search(f))}
    if ranks and len(ranks) != world_size:
        raise HubResumeError(
            f"{source} is a DeepSpeed checkpoint written by {len(ranks)} processes (one ZeRO optimizer shard per "
            f"rank), but this run has {world_size}. DeepSpeed cannot re-partition the shards: launch with "
            f"`--num_processes {len(ranks)}` (same GPU count), or start a fresh run."
        )


def _step(checkpoint_folder: str) -> int:
    return int(_CHECKPOINT_FOLDER.match(os.path.basename(checkpoint_folder)).group(1))


def newest_local_checkpoint(output_dir: str) -> str | None:
    """The newest complete `checkpoint-N` in `output_dir` (ours are renamed into place whole; one without its trainer
    state, e.g. copied in part by hand, is skipped with a warning), or None."""
    if not os.path.isdir(output_dir):
        return None
    for checkpoint in sorted(RunFolder(output_dir).checkpoints(), key=lambda path: _step(str(path)), reverse=True):
        if (checkpoint / TRAINER_STATE).is_file():
            return str(checkpoint)
        logger.warning("Not resuming from %s: it has no %s (incomplete).", checkpoint, TRAINER_STATE)
    return None


def pushes_checkpoints(args, push_to_hub: bool) -> bool:
    return push_to_hub and args.hub_strategy in ("checkpoint", "all_checkpoints")


def resume_checkpoint(args, push_to_hub: bool, token=None) -> str | None:
    """The checkpoint `trainer.train` resumes from, by `resume_from_checkpoint` (see the module docstring)."""
    asked = args.resume_from_checkpoint
    if asked == HUB_RESUME:
        return resume_from_hub(args, token)
    if asked not in (None, AUTO_RESUME):
        return asked
    if asked is None and args.overwrite_output_dir:
        return None  # start over (the earlier checkpoints were set aside)
    checkpoint = newest_local_checkpoint(args.output_dir)  # local first: no Hub call (nor its outage) needed
    # Every process decides together (one all-reduce, which is also the barrier before process 0 may download into
    # output_dir): a process taking the Hub branch alone would wait in its barrier for the others
    if asked == AUTO_RESUME and pushes_checkpoints(args, push_to_hub) and any_process(checkpoint is None):
        return resume_from_hub(args, token, missing_ok=True)
    if checkpoint is not None:
        logger.info("Resuming from the newest checkpoint in output_dir: %s", checkpoint)
    elif asked == AUTO_RESUME:
        logger.info("resume_from_checkpoint: auto found no checkpoint: training from the start.")
    return checkpoint


def _step_of_last_checkpoint(api, repo_id: str, revision: str | None) -> int:
    with tempfile.TemporaryDirectory() as tmp:  # outside output_dir: nothing is written there yet
        api.snapshot_download(
            repo_id, revision=revision, allow_patterns=[f"{LAST_CHECKPOINT}/{TRAINER_STATE}"], local_dir=tmp
        )
        with open(os.path.join(tmp, LAST_CHECKPOINT, TRAINER_STATE)) as f:
            return json.load(f)["global_step"]


def latest_pushed_checkpoint(api, repo_id: str, revision: str | None) -> tuple[str, int, list[str]] | None:
    """(folder in the repo, its step, its files) of the newest pushed checkpoint, or None."""
    by_folder: dict[str, list[str]] = {}
    for path in api.list_repo_files(repo_id, revision=revision):
        folder = path.split("/", 1)[0]
        if "/" in path and (folder == LAST_CHECKPOINT or _CHECKPOINT_FOLDER.match(folder)):
            by_folder.setdefault(folder, []).append(path)
    if not by_folder:
        return None
    steps = {folder: _step(folder) if folder != LAST_CHECKPOINT else None for folder in by_folder}
    if LAST_CHECKPOINT in steps:  # its step is only in its trainer state
        steps[LAST_CHECKPOINT] = _step_of_last_checkpoint(api, repo_id, revision)
    folder = max(steps, key=steps.get)
    return folder, steps[folder], by_folder[folder]


def resume_from_hub(args, token=None, missing_ok: bool = False) -> str | None:
    """Local path of the checkpoint to resume from: the newest one pushed to the Hub, downloaded into `output_dir`,
    or a local checkpoint of the same or a later step (a relaunch after the download continues from there).
    `missing_ok` (`auto`): no checkpoint anywhere, or no repo yet, is a fresh start (None) instead of an error; a Hub
    that cannot be read is an error either way (starting over would silently discard the pushed progress)."""
    repo_id = hub_repo_id(args)
    api = hub_api(token)
    asked = args.resume_from_checkpoint
    try:
        latest = latest_pushed_checkpoint(api, repo_id, args.hub_revision)
    except Exception as error:
        local = newest_local_checkpoint(args.output_dir)
        if missing_ok and local is not None:  # `auto`, and this process has a local checkpoint
            logger.warning(
                "Could not read the Hub repo %r (%s): resuming from %s.", repo_id, failure_reason(error, token), local
            )
            return local
        if not (missing_ok and isinstance(error, RepositoryNotFoundError | RevisionNotFoundError)):
            raise HubResumeError(
                f"`resume_from_checkpoint: {asked}` could not read the Hub repo {repo_id!r}: "
                f"{failure_reason(error, token)}. Check `hub_model_id`, your login (`huggingface-cli whoami`) and "
                "network; nothing was started, so that pushed progress is not silently trained over."
            ) from None
        latest = None  # `auto` before the first push: the repo (or its revision) does not exist yet
    local = newest_local_checkpoint(args.output_dir)
    if latest is None and local is None:
        if missing_ok:
            logger.info("resume_from_checkpoint: auto: no checkpoint here or on %s: training from the start.", repo_id)
            return None
        raise HubResumeError(
            f"`resume_from_checkpoint: {HUB_RESUME}`: the Hub repo {repo_id!r} holds no pushed checkpoint "
            f"(`{LAST_CHECKPOINT}/` or `{CHECKPOINT_PREFIX}-N/`). Checkpoints are pushed during training with "
            "`push_to_hub: true` and `hub_strategy: checkpoint` (or `all_checkpoints`)."
        )
    use_local = local is not None and (latest is None or _step(local) >= latest[1])
    if use_local:
        checkpoint, source = local, f"local: the Hub repo {repo_id} has no later checkpoint"
    else:
        folder, step, files = latest
        check_world_size(files, args.world_size, f"The checkpoint `{folder}/` of the Hub repo {repo_id!r}")
        checkpoint = str(RunFolder(args.output_dir).checkpoint(step))
        source = f"downloaded from {repo_id}/{folder}"
    # Every process passes this barrier, whichever way it decided: a slower process may already see the download
    # as a local checkpoint (the same folder), and skipping the barrier would leave the processes' collectives out
    # of step (a hang inside DeepSpeed's init).
    with args.main_process_first(local=args.save_on_each_node, desc="download the Hub checkpoint"):
        if not use_local and args.should_save:  # the processes that write checkpoints receive this one
            _download(api, repo_id, args.hub_revision, folder, checkpoint, token)
    logger.info("Resuming from %s (%s)", checkpoint, source)
    return checkpoint


def _download(api, repo_id: str, revision: str | None, folder: str, target: str, token) -> None:
    staging = RunFolder(os.path.dirname(target)).staging / "from-hub"
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted download
    try:
        api.snapshot_download(repo_id, revision=revision, allow_patterns=[f"{folder}/*"], local_dir=staging)
    except Exception as error:
        raise HubResumeError(
            f"Downloading `{folder}/` of the Hub repo {repo_id!r} failed: {failure_reason(error, token)}. Nothing "
            "was resumed; rerun the same command to try again."
        ) from None
    publish_dir(staging / folder, target)  # complete, so transformers may resume from it
    shutil.rmtree(staging)  # what is left: huggingface_hub's download metadata
    with contextlib.suppress(OSError):
        staging.parent.rmdir()
