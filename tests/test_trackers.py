"""`report_to: tensorboard`, `trackio` and `wandb` (offline) record every metric the trainer logs, the AdaDPO ones
included: each tracker's own files are read back and compared with the run's log history. Offline, no account: wandb
with WANDB_MODE=offline, trackio in its local SQLite store, tensorboard in `output_dir/runs/`."""

import json
import sqlite3
import struct
from pathlib import Path

import pytest

from tests.helpers.runs import tiny_run_args, train


def expected_rows(log_history: list[dict]) -> dict[int, dict[str, float]]:
    """Every number the trainer logged, by step, under the names transformers gives the trackers (`train/<key>`,
    `eval/<key>` for `eval_<key>`); the end-of-training summary (`train_runtime`, ...) is not a step's metric."""
    rows: dict[int, dict[str, float]] = {}
    for entry in log_history:
        if "train_runtime" in entry:
            continue
        for key, value in entry.items():
            if key in ("step", "epoch") or not isinstance(value, int | float):
                continue
            name = f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"
            rows.setdefault(entry["step"], {})[name] = value
    return rows


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
                                              save_strategy="no", test_split_size=4))  # fmt: skip
    expected = expected_rows(trainer.state.log_history)
    if tracker == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        written = {}
        for events in (out / "runs").glob("*/events.out.tfevents.*"):  # the final evaluation may open a second file
            accumulator = EventAccumulator(str(events))
            accumulator.Reload()
            for tag in accumulator.Tags()["scalars"]:
                for event in accumulator.Scalars(tag):
                    written.setdefault(event.step, {})[tag] = event.value
    elif tracker == "wandb":
        import wandb

        wandb.finish()  # what the end of the process does: the run's file is complete
        written = {}
        for row in wandb_history(tmp_path):
            written.setdefault(row["train/global_step"], {}).update(row)
    else:
        written = {}
        import trackio

        trackio.finish()  # flushes what is still queued (the final evaluation)
        for row in trackio_rows(tmp_path / "trackio"):  # its own step counter: key by the trainer's step
            written.setdefault(row["train/global_step"], {}).update(row)
    assert len(expected) == 2 and any("eval/loss" in row for row in expected.values())  # two steps, a final eval
    assert any(name.startswith("train/adadpo/") for name in expected[1])  # the balance and beta_w among them
    for step, want in expected.items():
        got = {name: written.get(step, {}).get(name) for name in want}
        assert got == pytest.approx(want, rel=1e-6, abs=1e-7), step
