"""Hub push through the real `scripts/run_adadpo.py`: a failed push (network, bad token) leaves a complete local
save, says what failed, exits non-zero only after saving, and never leaks the token; a successful push uploads the
saved folder. `huggingface_hub.HfApi` is patched, so nothing touches the network.

Run as a script, this file is the harness of the exit-code test:
    python tests/hub/test_hub.py <run_adadpo arguments>
runs `scripts/run_adadpo.py` as `__main__` with `HfApi.upload_folder` failing like a dropped connection.
"""

import os
import runpy
import subprocess
import sys
from unittest import mock

import httpx2 as httpx  # huggingface_hub 2.x ships its HTTP client as `httpx2`
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from transformers import AutoModelForCausalLM, AutoTokenizer

from adadpo.hub.push import HubPushError
from tests.helpers.runs import REPO_ROOT, harness_env, tiny_run_args


ENV_TOKEN = "hf_EnvTokenAbCdEfGh0123456789xyz"
ARG_TOKEN = "hf_ArgTokenZyXwVuTs9876543210abc"
REPO_ID = "someone/adadpo-tiny"


def train(run_adadpo, argv):
    return run_adadpo.main(*run_adadpo.parse_args(argv), argv=argv)


def push_args(model_dir, data_path, output_dir) -> list[str]:
    """The final push only (`hub_strategy: end`); checkpoint pushes are tested in test_hub_checkpoints.py."""
    return tiny_run_args(
        model_dir, data_path, output_dir, max_steps=1, save_steps=1, push_to_hub=True, hub_model_id=REPO_ID,
        hub_token=ARG_TOKEN, hub_strategy="end",
    )  # fmt: skip


def assert_complete_local_save(output_dir):
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "all_results.json"):
        assert (output_dir / name).is_file(), name
    AutoModelForCausalLM.from_pretrained(output_dir)
    AutoTokenizer.from_pretrained(output_dir)
    assert "`adadpo`" in (output_dir / "README.md").read_text()


def assert_no_token(output_dir, *texts):
    for token in (ENV_TOKEN, ARG_TOKEN):
        for text in texts:
            assert token not in text
        for path in output_dir.rglob("*"):  # model card, saved configs, training_args.bin, checkpoints, logs
            if path.is_file():
                assert token.encode() not in path.read_bytes(), path


def test_failed_push_with_a_bad_token_keeps_the_local_save(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, monkeypatch, caplog, capsys
):
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    out = tmp_path / "out"
    request = httpx.Request("POST", "https://huggingface.co/api/repos/create")
    refused = HfHubHTTPError(
        f"401 Client Error: Unauthorized. Invalid credentials in Authorization header (token {ARG_TOKEN})",
        response=httpx.Response(401, request=request),
    )
    with (
        mock.patch.object(HfApi, "create_repo", side_effect=refused),
        mock.patch.object(HfApi, "upload_folder") as upload,
        pytest.raises(HubPushError) as error,
    ):
        train(run_adadpo, push_args(tiny_model_dir, pref_jsonl, out))
    message = str(error.value)
    assert f"Pushing {out} to the Hub repo {REPO_ID!r} failed: 401 Client Error: Unauthorized" in message
    assert "saved locally" in message and "huggingface-cli whoami" in message
    upload.assert_not_called()
    assert_complete_local_save(out)
    assert_no_token(out, message, caplog.text, *capsys.readouterr())


def test_failed_push_exits_nonzero_only_after_saving(tiny_model_dir, pref_jsonl, tmp_path):
    out = tmp_path / "out"
    env = harness_env(HF_TOKEN=ENV_TOKEN)
    proc = subprocess.run(
        [sys.executable, __file__, *push_args(tiny_model_dir, pref_jsonl, out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-4000:]
    logs = proc.stdout + proc.stderr
    assert f"Pushing {out} to the Hub repo {REPO_ID!r} failed: [Errno -3] Temporary failure" in logs
    assert "Traceback" not in logs  # one clear error line, not a stack trace
    assert_complete_local_save(out)
    assert_no_token(out, logs)


def test_successful_push_uploads_model_tokenizer_and_card(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    out = tmp_path / "out"
    uploads = []

    def upload_folder(api, *, folder_path, repo_id, ignore_patterns=(), **kwargs):
        from huggingface_hub.utils import filter_repo_objects

        files = [os.path.relpath(os.path.join(d, f), folder_path) for d, _, fs in os.walk(folder_path) for f in fs]
        uploads.append(
            {"token": api.token, "repo_id": repo_id, "folder": folder_path,
             "files": set(filter_repo_objects(files, ignore_patterns=ignore_patterns))}
        )  # fmt: skip

    with (
        mock.patch.object(HfApi, "create_repo") as create_repo,
        mock.patch.object(HfApi, "upload_folder", autospec=True, side_effect=upload_folder),
    ):
        train(run_adadpo, push_args(tiny_model_dir, pref_jsonl, out))
    assert create_repo.call_args.args[0] == REPO_ID
    [upload] = uploads
    assert upload["repo_id"] == REPO_ID and os.path.samefile(upload["folder"], out)
    assert upload["token"] == ARG_TOKEN  # the explicit `hub_token` wins over HF_TOKEN
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= upload["files"]
    assert not any(f.startswith(("checkpoint-", ".checkpoint-staging")) for f in upload["files"])
    assert "--hub_token=***" in (out / "README.md").read_text()  # the reproduce command keeps its shape
    assert_no_token(out)


if __name__ == "__main__":

    def dropped_connection(*args, **kwargs):
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution")

    HfApi.create_repo = lambda *args, **kwargs: None
    HfApi.upload_folder = dropped_connection
    sys.argv = [str(REPO_ROOT / "scripts" / "run_adadpo.py"), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
