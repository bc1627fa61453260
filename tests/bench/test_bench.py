"""The throughput benchmarks (`bench/`): FLOP/MFU accounting, summaries, token counting, the synthetic length mix,
argument checks, and one tiny end-to-end CPU run of `bench/throughput.py` (two methods, one measured step each)."""

import json
import math
import os
import random
import subprocess
import sys

import pytest
import torch
from trl.trainer.dpo_trainer import DataCollatorForPreference

from adadpo.testing import build_tiny_model, build_tiny_tokenizer
from adadpo.training.collators import DataCollatorForPackedPreference
from tests.helpers.runs import REPO_ROOT


sys.path.insert(0, str(REPO_ROOT / "bench"))
import gpu_throughput  # noqa: E402
import length_mix  # noqa: E402
import throughput  # noqa: E402
import throughput_harness  # noqa: E402
import throughput_report  # noqa: E402


def test_mfu_matches_hand_computed_flops():
    # 1e9 params, 1000 real tokens: policy 6 * 1e9 * 1000 = 6e12, reference 2 * 1e9 * 1000 = 2e12 FLOPs in 2 s on a
    # 1e13 FLOP/s GPU -> 8e12 / 2e13 = 0.4; reference-free (no reference forward) -> 6e12 / 2e13 = 0.3.
    assert gpu_throughput.training_flops(1e9, 1000, 1000) == 8e12
    assert gpu_throughput.mfu(1e9, 1000, 1000, seconds=2.0, peak_flops=1e13) == pytest.approx(0.4)
    assert gpu_throughput.mfu(1e9, 1000, 0, seconds=2.0, peak_flops=1e13) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="positive"):
        gpu_throughput.mfu(1e9, 1000, 1000, seconds=0.0, peak_flops=1e13)


def test_gpu_benchmark_help_and_cpu_refusal():
    script = str(REPO_ROOT / "bench" / "gpu_throughput.py")
    shown = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert shown.returncode == 0 and "MFU" in shown.stdout and "--peak-tflops" in shown.stdout
    args = gpu_throughput.parse_args(["--batch-size", "4", "--methods", "trl-dpo", "adadpo-packed"])
    assert args.batch_size == 4 and args.methods == ["trl-dpo", "adadpo-packed"]
    assert args.attn_implementation == "flash_attention_2"
    with pytest.raises(SystemExit):  # every ratio is relative to stock TRL, so it must be run
        gpu_throughput.parse_args(["--methods", "adadpo"])
    if not torch.cuda.is_available():
        refused = subprocess.run([sys.executable, script], capture_output=True, text=True, cwd=REPO_ROOT)
        assert refused.returncode != 0 and "needs a CUDA GPU" in refused.stderr


def test_matmul_parameters_excludes_untied_input_embedding():
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer)  # untied: the LM head is its own matrix
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    assert throughput_harness.matmul_parameters(model) == total - embedding
    model.get_output_embeddings().weight = model.get_input_embeddings().weight  # tie: the LM head matmul uses it
    assert throughput_harness.matmul_parameters(model) == sum(p.numel() for p in model.parameters())


def test_token_counts_of_padded_and_packed_batches():
    examples = [
        {"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6]},
        {"prompt_ids": [7], "chosen_ids": [9], "rejected_ids": [10, 11, 12, 13]},
    ]
    # Sequence lengths 5, 2, 4, 5 -> 16 real tokens; padded to 4 x 5 = 20; packed into one row of exactly 16.
    counter = throughput_harness.CountingCollator(DataCollatorForPreference(pad_token_id=0))
    counter(examples)
    assert counter.counts == [(16, 20)]
    packed = DataCollatorForPackedPreference(pad_token_id=0)(examples)
    assert throughput_harness.count_tokens(packed) == (16, 16)
    budget = DataCollatorForPackedPreference(pad_token_id=0, max_tokens_per_batch=6)(examples)
    assert throughput_harness.count_tokens(budget) == (16, budget["input_ids"].numel())


def _run(method, seconds, real, computed, rss_gib, cpu_seconds=None):
    return {
        "method": method,
        "step_seconds": seconds,
        "step_cpu_seconds": cpu_seconds or [],
        "real_tokens": real,
        "computed_tokens": computed,
        "peak_rss_bytes": rss_gib * 2**30,
        "peak_gpu_bytes": None,
    }


def test_summary_medians_ratios_and_table():
    runs = [
        # step 1 is warm-up; CPU seconds: 2 busy threads for stock TRL, 1 for the other
        _run("trl-dpo", [9.0, 2.0, 4.0, 3.0], [100, 100, 200, 300], [150, 150, 300, 400], 4.0, [18.0, 4.0, 8.0, 6.0]),
        _run("adadpo-packed", [9.0, 1.0, 2.0, 1.0], [100, 100, 200, 300], [100, 100, 200, 300], 3.0, [9.0, 1, 2, 1]),
    ]
    rows = {row["method"]: row for row in throughput_report.summarize(runs, warmup_steps=1, baseline="trl-dpo")}
    base, packed = rows["trl-dpo"], rows["adadpo-packed"]
    assert base["measured_steps"] == 3 and base["s_per_step"] == 3.0
    assert base["tokens_per_s"] == 50.0  # median of 100/2, 200/4, 300/3
    assert packed["tokens_per_s"] == 100.0 and packed["s_per_step"] == 1.0  # median of 100, 100, 300
    assert packed["tokens_per_s_ratio"] == 2.0 and packed["s_per_step_ratio"] == pytest.approx(1 / 3)
    assert base["tokens_per_cpu_s"] == 25.0 and packed["tokens_per_cpu_s_ratio"] == 4.0
    assert packed["peak_rss_ratio"] == 0.75 and base["real_token_fraction"] == pytest.approx(600 / 850)
    assert throughput_report.same_batches(runs)
    assert not throughput_report.same_batches(runs + [_run("dpo", [1.0], [7], [7], 1.0)])
    next_round = [dict(run, round=1, real_tokens=[5, 6]) for run in runs]  # rounds use different data orders
    assert throughput_report.same_batches(runs + next_round)
    table = throughput_report.markdown_table(list(rows.values()), {"trl-dpo": "stock"})
    assert "| stock | 50.0 | 1.00 | 3.00 | 1.00 | 25.0 | 1.00 | 4.00 | 1.00 | 71% |" in table
    assert "| adadpo-packed | 100.0 | 2.00 | 1.00 | 0.33 | 100.0 | 4.00 | 3.00 | 0.75 | 100% |" in table
    without_cpu_time = throughput_report.summarize([dict(run, step_cpu_seconds=[]) for run in runs], 1, "trl-dpo")
    assert "CPU-s" not in throughput_report.markdown_table(without_cpu_time, {})
    with pytest.raises(ValueError, match="baseline"):
        throughput_report.summarize(runs[1:], warmup_steps=1, baseline="trl-dpo")


def test_method_order_alternates_and_targets_are_checked():
    assert throughput.method_order(["a", "b", "c"], 3) == [
        (0, "a"), (0, "b"), (0, "c"), (1, "c"), (1, "b"), (1, "a"), (2, "a"), (2, "b"), (2, "c")
    ]  # fmt: skip
    rows = [
        {"method": "trl-dpo", "tokens_per_s": 100.0, "peak_rss_gib": 5.0, "tokens_per_cpu_s": 50.0},
        {"method": "adadpo", "tokens_per_s": 96.0, "peak_rss_gib": 5.0, "tokens_per_cpu_s": 48.0},
        {"method": "adadpo-packed", "tokens_per_s": 120.0, "peak_rss_gib": 4.0},
    ]
    assert throughput.check_targets(rows) == [
        "- adadpo padded >= 0.95x stock TRL real tokens/s: 0.96x -> met (per CPU-second: 0.96x)",
        "- adadpo packed >= 1.3x adadpo padded real tokens/s: 1.25x -> MISSED",
        "- adadpo packed peak RSS <= adadpo padded: 0.80x -> met",
    ]


def test_length_mix_texts_have_their_target_token_counts():
    tokenizer = build_tiny_tokenizer()
    words = length_mix.word_tokens(tokenizer)
    rng = random.Random(0)
    for n in (1, 7, 64, 300):
        count = len(tokenizer(length_mix.text_of_length(rng, words, n), add_special_tokens=False)["input_ids"])
        assert n <= count <= n + 1  # the first word has no leading space, so it may split in two
    draws = [length_mix.PROMPT_LENGTH.sample(rng) for _ in range(4000)]
    assert min(draws) >= 4 and max(draws) <= 1800
    assert sorted(draws)[2000] == pytest.approx(90, rel=0.1)  # the median of the log-normal
    assert length_mix.PROMPT_LENGTH.mean == pytest.approx(90 * math.exp(0.72))
    rows = length_mix.make_length_mix_rows(tokenizer, 3, seed=1)
    assert rows == length_mix.make_length_mix_rows(tokenizer, 3, seed=1)
    assert rows[0]["prompt"][0]["role"] == "user" and rows[0]["chosen"][0]["role"] == "assistant"


def test_cpu_benchmark_end_to_end_on_tiny_model(tiny_model_dir, tmp_path):
    """Two methods in fresh processes: same batches, packed computes no pad tokens, JSON + RESULTS.md written."""
    results_md = tmp_path / "RESULTS.md"
    argv = ["--model-dir", str(tiny_model_dir), "--methods", "trl-dpo", "adadpo-packed", "--rounds", "1"]
    argv += ["--measured-steps", "1", "--max-length", "512", "--num-pairs", "8", "--results-dir", str(tmp_path)]
    throughput.main(argv + ["--results-md", str(results_md)])
    payload = json.loads(next(tmp_path.glob("throughput-*.json")).read_text())
    rows = {row["method"]: row for row in payload["summary"]}
    assert payload["same_batches"] and [run["method"] for run in payload["runs"]] == ["trl-dpo", "adadpo-packed"]
    assert rows["trl-dpo"]["tokens_per_s_ratio"] == 1.0 and rows["adadpo-packed"]["real_token_fraction"] == 1.0
    assert rows["trl-dpo"]["real_token_fraction"] < 1.0 and rows["adadpo-packed"]["peak_rss_gib"] > 0
    assert all(
        len(run["step_seconds"]) == 2 and run["first_loss"] == pytest.approx(math.log(2)) for run in payload["runs"]
    )
    text = results_md.read_text()
    assert "| adadpo `adadpo` packed |" in text and "Same batches for every method: True" in text
    assert "real tokens/CPU-s" in text and all(len(run["step_cpu_seconds"]) == 2 for run in payload["runs"])


def test_gpu_benchmark_main_puts_mfu_in_every_row(tiny_model_dir, tmp_path, monkeypatch):
    """The CUDA driver end to end with the workers faked (no GPU here): MFU per method from its own tokens/step."""

    def fake_worker(spec, work_dir, log_name):
        packed = spec["method"] == "adadpo-packed"
        return {
            "method": spec["method"],
            "step_seconds": [5.0, 1.0, 1.0] if packed else [5.0, 2.0, 2.0],
            "step_cpu_seconds": [],
            "real_tokens": [1000, 1000, 1000],
            "computed_tokens": [1000, 1000, 1000] if packed else [1500, 1500, 1500],
            "peak_rss_bytes": 2**30,
            "peak_gpu_bytes": 2**32 if packed else 2**33,
            "matmul_parameters": 1e8,
            "needs_reference": True,
        }

    monkeypatch.setattr(gpu_throughput, "spawn_worker", fake_worker)
    monkeypatch.setattr(gpu_throughput, "machine_description", lambda: {"gpu": "fake"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu_throughput.main(
        ["--model-dir", str(tiny_model_dir), "--methods", "trl-dpo", "adadpo-packed", "--peak-tflops", "1"]
        + ["--warmup-steps", "1", "--measured-steps", "2", "--num-pairs", "4", "--results-dir", str(tmp_path)]
    )
    payload = json.loads(next(tmp_path.glob("gpu-throughput-*.json")).read_text())
    rows = {row["method"]: row for row in payload["summary"]}
    # (6 + 2) * 1e8 params * 1000 tokens = 8e11 FLOPs per step over 1e12 FLOP/s: 0.4 at 2 s/step, 0.8 at 1 s/step
    assert rows["trl-dpo"]["mfu"] == pytest.approx(0.4) and rows["adadpo-packed"]["mfu"] == pytest.approx(0.8)
    assert rows["adadpo-packed"]["peak_gpu_ratio"] == 0.5 and payload["peak_bf16_tflops"] == 1.0


def test_gpu_check_toy_runs_the_whole_pipeline_on_the_cpu(tmp_path):
    """`bash bench/gpu_check.sh --toy`: a random tiny Llama, preflight (all rows pass), then stock TRL vs adadpo
    padded vs packed in fresh processes, one JSON and one table; on the GPU the same script builds the 1B model."""
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(REPO_ROOT / "bench" / "gpu_check.sh"), "--toy", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "PY": sys.executable},
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    payload = json.loads((out / "gpu_check.json").read_text())
    assert payload["on_gpu"] is False and payload["attention"] == "sdpa" and payload["preflight"]["exit_code"] == 0
    assert payload["preflight"]["checks"] and all(c["status"] != "FAIL" for c in payload["preflight"]["checks"])
    rows = {row["method"]: row for row in payload["throughput"]["summary"]}
    assert set(rows) == {"trl-dpo", "adadpo", "adadpo-packed"}
    assert all(row["tokens_per_s"] > 0 and 0 < row["mfu"] for row in rows.values())
    assert rows["adadpo-packed"]["real_token_fraction"] == 1.0 > rows["trl-dpo"]["real_token_fraction"]
    table = (out / "gpu_check.md").read_text()
    assert "| adadpo `adadpo` packed |" in table and "MFU" in table and "Preflight: exit 0" in table


def test_gpu_check_refuses_without_a_gpu_and_without_toy():
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    refused = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "gpu_check.py")], capture_output=True,
                             text=True, cwd=REPO_ROOT)  # fmt: skip
    assert refused.returncode != 0 and "needs a CUDA GPU (or --toy" in refused.stderr
