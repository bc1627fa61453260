"""`report_to: tensorboard`, `trackio` and `wandb` (offline) record every metric the trainer logs, the AdaDPO ones
included: each tracker's own files are read back and compared with the run's log history. Offline, no account: wandb
with WANDB_MODE=offline, trackio in its local SQLite store, tensorboard in `output_dir/runs/`."""

import json
import sqlite3
import struct
from pathlib import Path

import pytest

from tests.helpers.runs import step_logs, tiny_run_args, train


CHECKED = ("loss", "adadpo/beta_w_mean", "adadpo/token_grad_balance_median", "rewards/margins", "kl/beta_margin")


def tensorboard_scalars(output_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (output_dir / "runs").glob("*/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    return {tag: [e.value for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def wandb_history(wandb_dir: Path) -> list[dict]:
    """The history rows of an offline run, from its `.wandb` file: LevelDB's log format (32 KiB blocks of
    [crc32, length, type] framed chunks after a 7-byte `:W&B` header) holding wandb's `Record` protobufs."""
    from wandb.proto import wandb_internal_pb2

    (path,) = wandb_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, block, header = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    pos, chunk, records = header, b"", []
    while pos + header <= len(data):
        room = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + header]) if room >= header else (0, 0, 0)
        if kind == 0:  # the rest of the block is padding
            pos += room
            continue
        piece, pos = data[pos + header : pos + header + length], pos + header + length
        chunk = piece if kind in (1, 2) else chunk + piece  # FULL / FIRST start a record, MIDDLE / LAST continue it
        if kind in (1, 4):
            records.append(chunk)
    history = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return history


def trackio_rows(trackio_dir: Path) -> list[dict]:
    (db,) = trackio_dir.glob("*.db")
    with sqlite3.connect(db) as connection:
        return [json.loads(row[0]) for row in connection.execute("SELECT metrics FROM metrics ORDER BY step")]


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb", "trackio"])
def test_every_logged_metric_reaches_the_tracker(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, monkeypatch, tracker
):
    monkeypatch.delenv("WANDB_DISABLED", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    out = tmp_path / "out"
    trainer = train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, out, report_to=tracker, max_steps=2,
                                              save_strategy="no"))  # fmt: skip
    logged = step_logs(trainer)
    if tracker == "tensorboard":
        scalars = tensorboard_scalars(out)
        written = [{key: scalars[f"train/{key}"][i] for key in CHECKED} for i in range(len(logged))]
    elif tracker == "wandb":
        import wandb

        wandb.finish()  # what the end of the process does: the run's file is complete
        rows = [row for row in wandb_history(tmp_path) if "train/loss" in row]
        written = [{key: row[f"train/{key}"] for key in CHECKED} for row in rows]
    else:
        rows = [row for row in trackio_rows(tmp_path / "trackio") if "train/loss" in row]
        written = [{key: row[f"train/{key}"] for key in CHECKED} for row in rows]
    assert len(written) == len(logged) == 2
    for got, want in zip(written, logged, strict=True):
        assert got == pytest.approx({key: want[key] for key in CHECKED}, rel=1e-6, abs=1e-7)
