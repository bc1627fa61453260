"""The Hub client and the final push. The model is always saved locally first; a failed push never loses the local
save, and no token is ever printed or written."""

import logging
import os

from huggingface_hub import HfApi

from adadpo.files import redact
from adadpo.run_folder import not_pushed_at_the_end


logger = logging.getLogger(__name__)


def hub_api(token=None) -> HfApi:
    """The one place that builds a Hub client. Token: `token` (the recipe's `hub_token`), else HF_TOKEN or
    `huggingface-cli login`; it stays in memory and is never printed."""
    return HfApi(token=token)


def hub_repo_id(args) -> str:
    """`hub_model_id`, else the run folder's name (what transformers' Trainer uses too)."""
    return args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))


def ensure_repo(api: HfApi, repo_id: str, private: bool | None, revision: str | None) -> None:
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)


def failure_reason(error: Exception, token=None) -> str:
    """What went wrong, fit to log: any token (the given one, HF_TOKEN, anything shaped like one) replaced."""
    return redact(str(error) or type(error).__name__, secrets=(token, os.environ.get("HF_TOKEN")))


def push_folder(
    output_dir: str, repo_id: str, private: bool | None, revision: str | None, commit_message: str, token=None
):
    """Upload a saved run folder (model, tokenizer, card; not intermediate checkpoints)."""
    api = hub_api(token)
    ensure_repo(api, repo_id, private, revision)
    return api.upload_folder(
        folder_path=output_dir,
        repo_id=repo_id,
        revision=revision,
        commit_message=commit_message,
        ignore_patterns=not_pushed_at_the_end(),
    )


class HubError(RuntimeError):
    """A Hub failure the script reports as one line and exit status 1 (the message says what was kept locally)."""


class HubPushError(HubError):
    pass


def safe_push(
    output_dir: str, repo_id: str, private: bool | None, revision: str | None, commit_message: str, token=None
):
    """Push and turn any failure into one clear error that says the local save is complete (token redacted)."""
    try:
        return push_folder(output_dir, repo_id, private, revision, commit_message, token=token)
    except Exception as error:  # network, auth, permissions: all mean the same to the user
        reason = failure_reason(error, token)
        raise HubPushError(
            f"Pushing {output_dir} to the Hub repo {repo_id!r} failed: {reason}. The model, tokenizer and "
            f"model card are saved locally in {output_dir}; push them later with `huggingface-cli upload {repo_id} "
            f"{output_dir}` after checking your login (`huggingface-cli whoami`) and network."
        ) from None
