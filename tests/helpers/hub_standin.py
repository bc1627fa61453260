"""A local stand-in for the Hugging Face Hub: each repository is a folder under `root`. `LocalHub.api_class` is an
`HfApi` subclass whose calls the project makes (create_repo, create_commit, upload_folder, list_repo_files,
snapshot_download) read and write those folders instead of the network; tests install it with
`monkeypatch.setattr(adadpo.hub.push, "HfApi", hub.api_class)`. Commits are all-or-nothing, like the Hub's, and
every commit is recorded (message, files, token) for the tests to inspect."""

import os
import shutil
import threading
from pathlib import Path

import httpx2 as httpx  # huggingface_hub 2.x ships its HTTP client as `httpx2`
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import RepositoryNotFoundError
from huggingface_hub.utils import filter_repo_objects


class LocalHub:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.commits: list[dict] = []  # {"repo_id", "message", "files": {path: bytes}, "deleted", "token"}
        self.fail: dict[str, list[Exception]] = {}  # method name -> errors its next calls raise, in order
        self._lock = threading.Lock()  # the Hub serializes commits to a repository
        hub = self

        class StandInHfApi(HfApi):
            def create_repo(self, repo_id, *, exist_ok=False, **kwargs):
                hub.fail_if_asked("create_repo")
                path = hub.repo(repo_id)
                if path.exists() and not exist_ok:
                    raise FileExistsError(repo_id)
                path.mkdir(parents=True, exist_ok=True)
                return repo_id

            def list_repo_files(self, repo_id, *, revision=None, **kwargs):
                return sorted(hub.files(repo_id))

            def create_commit(self, repo_id, operations, *, commit_message, revision=None, **kwargs):
                hub.fail_if_asked("create_commit")
                hub.commit(repo_id, list(operations), commit_message, self.token)

            def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, commit_message=None, **kwargs):
                files = _folder_files(folder_path, kwargs.get("allow_patterns"), kwargs.get("ignore_patterns"))
                prefix = f"{path_in_repo.strip('/')}/" if path_in_repo else ""
                operations = [CommitOperationAdd(prefix + rel, path) for rel, path in files.items()]
                return self.create_commit(repo_id, operations, commit_message=commit_message or "Upload folder")

            def snapshot_download(self, repo_id, *, local_dir, allow_patterns=None, ignore_patterns=None, **kwargs):
                for rel in filter_repo_objects(
                    hub.files(repo_id), allow_patterns=allow_patterns, ignore_patterns=ignore_patterns
                ):
                    (Path(local_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(hub.repo(repo_id) / rel, Path(local_dir) / rel)
                return str(local_dir)

        self.api_class = StandInHfApi

    def repo(self, repo_id: str) -> Path:
        return self.root / repo_id

    def files(self, repo_id: str) -> list[str]:
        self.check_exists(repo_id)
        return list(_folder_files(self.repo(repo_id)))

    def check_exists(self, repo_id: str):
        if not self.repo(repo_id).is_dir():
            request = httpx.Request("GET", f"https://huggingface.co/api/models/{repo_id}")
            raise RepositoryNotFoundError(f"404: {repo_id} not found", response=httpx.Response(404, request=request))

    def fail_if_asked(self, method: str):
        if self.fail.get(method):
            raise self.fail[method].pop(0)

    def commit(self, repo_id: str, operations, message: str, token):
        """Apply to a copy, then swap it in: a commit lands whole or not at all."""
        with self._lock:
            self._commit(repo_id, operations, message, token)

    def _commit(self, repo_id: str, operations, message: str, token):
        self.check_exists(repo_id)
        repo = self.repo(repo_id)
        new = repo.with_name(repo.name + ".commit")
        shutil.copytree(repo, new)
        added, deleted = {}, []
        for op in operations:
            target = new / op.path_in_repo
            if isinstance(op, CommitOperationDelete):
                target.unlink()
                deleted.append(op.path_in_repo)
                continue
            with op.as_file() as f:
                added[op.path_in_repo] = f.read()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(added[op.path_in_repo])
        old = repo.with_name(repo.name + ".old")
        os.replace(repo, old)
        os.replace(new, repo)
        shutil.rmtree(old)
        self.commits.append(
            {"repo_id": repo_id, "message": message, "files": added, "deleted": deleted, "token": token}
        )


def _folder_files(folder, allow_patterns=None, ignore_patterns=None) -> dict[str, Path]:
    folder = Path(folder)
    found = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    return {
        rel: found[rel]
        for rel in filter_repo_objects(found, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns)
    }
