#!/usr/bin/env python
"""GPU throughput and MFU: stock TRL DPOTrainer vs the project's dpo / adadpo padded / adadpo packed, on CUDA with
flash-attention 2 in bf16. Not run in CI (needs a CUDA GPU and `pip install -e ".[flash]" --no-build-isolation`).

    python bench/gpu_throughput.py --model-dir .cache/smollm2-135m-instruct --batch-size 8 --max-length 2048

Model FLOPs utilization of a step with P real policy tokens and R real reference tokens (R = P for reference-based
losses, 0 for reference-free ones):

    MFU = (6 * N * P + 2 * N * R) / (seconds * peak)

6N per token for the policy forward + backward and 2N per token for the reference forward (Kaplan et al. 2020's
C ~ 6N; attention FLOPs left out), N = parameters that take part in matmuls (the input embedding is a lookup, so it
is excluded unless tied to the LM head), peak = this GPU's bf16 matmul rate measured at start with a large matmul
loop (not the datasheet figure). Pad tokens are not counted: they are wasted work, which is what packing removes.
"""

import os
import sys

from throughput_harness import (
    BASELINE,
    METHODS,
    benchmark_parser,
    check_benchmark_args,
    spawn_worker,
    write_data_and_base_spec,
)
from throughput_report import machine_description, markdown_table, summarize, timestamp, write_json


BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    parser = benchmark_parser(
        __doc__, batch_size=8, warmup_steps=2, measured_steps=5, rounds=1, max_length=2048, num_pairs=512
    )
    parser.add_argument("--attn-implementation", default="flash_attention_2")
    parser.add_argument(
        "--device", default="cuda", choices=["cuda", "cpu"], help="cpu: fp32, for a toy-size check of the pipeline"
    )
    parser.add_argument("--matmul-size", type=int, default=8192, help="n of the n x n bf16 matmuls timing the peak")
    parser.add_argument("--peak-tflops", type=float, default=None, help="skip the measurement and use this peak")
    args = parser.parse_args(argv)
    check_benchmark_args(parser, args)
    return args


def training_flops(num_params: float, policy_tokens: float, reference_tokens: float) -> float:
    """6 N per policy token (forward + backward) + 2 N per reference token (forward only)."""
    return 6.0 * num_params * policy_tokens + 2.0 * num_params * reference_tokens


def mfu(num_params: float, policy_tokens: float, reference_tokens: float, seconds: float, peak_flops: float) -> float:
    """Achieved model FLOPs per second over the peak; `seconds` is one optimizer step covering those tokens."""
    if seconds <= 0 or peak_flops <= 0:
        raise ValueError(f"seconds and peak_flops must be positive, got {seconds} and {peak_flops}.")
    return training_flops(num_params, policy_tokens, reference_tokens) / (seconds * peak_flops)


def measure_bf16_peak_flops(size: int = 8192, iterations: int = 50) -> float:
    """Best-case dense bf16 matmul FLOP/s of this GPU: 2 n^3 FLOPs per n x n matmul, timed with CUDA events."""
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):  # warm-up: cuBLAS heuristics, clocks
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iterations):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2.0 * size**3 * iterations / (start.elapsed_time(end) / 1e3)


def measure_cpu_peak_flops(size: int = 1024, iterations: int = 10) -> float:
    """The same for fp32 on this CPU (the toy check's MFU denominator), timed with the wall clock."""
    import time

    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(iterations):
        a @ b
    return 2.0 * size**3 * iterations / (time.perf_counter() - start)


def main(argv=None) -> dict:
    """Runs the methods, prints the table, writes the JSON; returns the payload (with `json_path` and `table`)."""
    args = parse_args(argv)
    import torch

    on_gpu = args.device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        sys.exit("bench/gpu_throughput.py needs a CUDA GPU; on CPU run bench/throughput.py (make bench).")
    if not os.path.isdir(args.model_dir):
        from adadpo.demo import prepare_smollm2

        prepare_smollm2(args.model_dir)
    if args.peak_tflops:
        peak = args.peak_tflops * 1e12
    else:
        peak = measure_bf16_peak_flops(args.matmul_size) if on_gpu else measure_cpu_peak_flops()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    work_dir, base_spec = write_data_and_base_spec(args, tokenizer)
    base_spec |= {
        "device": args.device,
        "bf16": on_gpu,
        "attn_implementation": args.attn_implementation,
    }
    runs = []
    for round_index in range(args.rounds):
        for method in args.methods if round_index % 2 == 0 else args.methods[::-1]:
            spec = {**base_spec, "method": method, "output_dir": os.path.join(work_dir, f"{method}-{round_index}")}
            print(f"[round {round_index}] {method} ...", flush=True)
            runs.append(spawn_worker(spec, work_dir, f"{method}-{round_index}"))
    summary = summarize(runs, args.warmup_steps, BASELINE)
    for row in summary:
        run = next(r for r in runs if r["method"] == row["method"])
        tokens = row["real_tokens_per_step"]
        row["mfu"] = mfu(
            run["matmul_parameters"], tokens, tokens if run["needs_reference"] else 0, row["s_per_step"], peak
        )
    table = markdown_table(summary, {n: METHODS[n].label for n in METHODS}, extra_columns={"mfu": "MFU"})
    payload = {
        "date": timestamp(),
        "command": "python bench/gpu_throughput.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine_description(),
        ("peak_bf16_tflops" if on_gpu else "peak_fp32_tflops"): peak / 1e12,
        "settings": base_spec | {"rounds": args.rounds},
        "summary": summary,
        "runs": runs,
    }
    json_path = os.path.join(args.results_dir, f"gpu-throughput-{payload['date']}.json")
    write_json(json_path, payload)
    print(f"\nMeasured {'bf16' if on_gpu else 'fp32'} peak: {peak / 1e12:.2f} TFLOP/s\n\n{table}\n\nJSON: {json_path}")
    return payload | {"json_path": json_path, "table": table}


if __name__ == "__main__":
    main()
