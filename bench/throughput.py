#!/usr/bin/env python
"""CPU throughput: stock TRL DPOTrainer vs the project's dpo / adadpo padded / adadpo packed, side by side.

    python bench/throughput.py              # what `make bench` runs: ~25 min on 2 idle cores
    python bench/throughput.py --rounds 1 --measured-steps 3 --methods trl-dpo dpo adadpo adadpo-packed  # ~12 min

Same model (SmolLM2-135M-Instruct, fp32, sdpa), same synthetic UltraFeedback-like data (`bench/length_mix.py`), same
seed, so every method trains on the same batches (checked: `same_batches` in the JSON). Each method runs in a fresh
process; the method order is run `--rounds` times, reversed every other round (each round with its own data-order
seed), so slow drift in machine load hits all methods alike. Figures are medians over the measured steps after the
warm-up step of every run, pooled over rounds (default 2 rounds x 2 measured steps = 4 per method). Writes
`bench/results/throughput-<time>.json` and the table to `bench/RESULTS.md`.
"""

import os
import shlex
import sys

from length_mix import describe_lengths, make_length_mix_rows
from throughput_harness import (
    BASELINE,
    METHODS,
    benchmark_parser,
    check_benchmark_args,
    spawn_worker,
    write_data_and_base_spec,
)
from throughput_report import machine_description, markdown_table, same_batches, summarize, timestamp, write_json


BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
TARGETS = (
    ("adadpo padded >= 0.95x stock TRL real tokens/s", "adadpo", "trl-dpo", "tokens_per_s", 0.95, ">="),
    ("adadpo packed >= 1.3x adadpo padded real tokens/s", "adadpo-packed", "adadpo", "tokens_per_s", 1.3, ">="),
    ("adadpo packed peak RSS <= adadpo padded", "adadpo-packed", "adadpo", "peak_rss_gib", 1.0, "<="),
)


def parse_args(argv=None):
    parser = benchmark_parser(
        __doc__, batch_size=2, warmup_steps=1, measured_steps=2, rounds=2, max_length=1024, num_pairs=64
    )
    parser.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        help="OMP_WAIT_POLICY of the workers ('' leaves it unset). PASSIVE: threads that wait at a parallel barrier "
        "sleep instead of spinning; on a machine shared with other jobs spinning threads burn the cores their "
        "partner thread needs (measured here: 2-3x slower steps, with CPU time as noisy as wall time)",
    )
    parser.add_argument("--results-md", default=os.path.join(BENCH_DIR, "RESULTS.md"), help="'' to skip")
    args = parser.parse_args(argv)
    check_benchmark_args(parser, args)
    return args


def method_order(methods: list[str], rounds: int) -> list[tuple[int, str]]:
    """(round, method) in run order: forward, reversed, forward, ..."""
    return [(r, m) for r in range(rounds) for m in (methods if r % 2 == 0 else methods[::-1])]


def check_targets(rows: list[dict]) -> list[str]:
    by_method = {row["method"]: row for row in rows}
    lines = []
    for text, method, reference, key, bound, op in TARGETS:
        if method in by_method and reference in by_method:
            ratio = by_method[method][key] / by_method[reference][key]
            met = ratio >= bound if op == ">=" else ratio <= bound
            line = f"- {text}: {ratio:.2f}x -> {'met' if met else 'MISSED'}"
            cpu_figures = by_method[method].get("tokens_per_cpu_s"), by_method[reference].get("tokens_per_cpu_s")
            if key == "tokens_per_s" and all(cpu_figures):
                line += f" (per CPU-second: {cpu_figures[0] / cpu_figures[1]:.2f}x)"
            lines.append(line)
    return lines


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isdir(args.model_dir):
        from adadpo.demo import prepare_smollm2

        prepare_smollm2(args.model_dir)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    rows = make_length_mix_rows(tokenizer, args.num_pairs, seed=args.seed)
    work_dir, base_spec = write_data_and_base_spec(args, tokenizer, rows)
    base_spec |= {
        "device": "cpu",
        "bf16": False,
        "attn_implementation": "sdpa",
        "omp_wait_policy": args.omp_wait_policy,
    }
    runs, loads = [], []
    for round_index, method in method_order(args.methods, args.rounds):
        load_before = os.getloadavg()[0]
        spec = {
            **base_spec,
            "method": method,
            "seed": args.seed + round_index,  # a different batch order per round, the same for every method
            "output_dir": os.path.join(work_dir, f"{method}-{round_index}"),
        }
        print(f"[round {round_index}] {method} (load {load_before:.1f}) ...", flush=True)
        run = spawn_worker(spec, work_dir, f"{method}-{round_index}")
        run.update(round=round_index, load_before=load_before, load_after=os.getloadavg()[0])
        runs.append(run)
        loads += [load_before, run["load_after"]]
        print(
            f"    steps {[round(s, 2) for s in run['step_seconds']]} s, real tokens {run['real_tokens']}", flush=True
        )

    summary = summarize(runs, args.warmup_steps, BASELINE)
    labels = {name: METHODS[name].label for name in METHODS}
    table = markdown_table(summary, labels)
    targets = check_targets(summary)
    command = "python bench/throughput.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    payload = {
        "date": timestamp(),
        "command": command.strip(),
        "machine": machine_description(),
        "settings": {k: v for k, v in base_spec.items() if k not in ("data_path",)} | {"rounds": args.rounds},
        "data_lengths": describe_lengths(rows, tokenizer),
        "load_average": {"min": min(loads), "max": max(loads)},
        "same_batches": same_batches(runs),
        "summary": summary,
        "targets": targets,
        "runs": runs,
    }
    json_path = os.path.join(args.results_dir, f"throughput-{payload['date']}.json")
    write_json(json_path, payload)
    print("\n" + table + "\n\n" + "\n".join(targets) + f"\n\nJSON: {json_path}")
    if args.results_md:
        write_results_md(args.results_md, payload, table, targets)


def write_results_md(path: str, payload: dict, table: str, targets: list[str]) -> None:
    machine, settings = payload["machine"], payload["settings"]
    lines = [
        "# Throughput benchmark (latest run)",
        "",
        f"- Date: {payload['date']}; command: `{payload['command']}`",
        f"- Machine: {machine['cpu']}, {machine['cpu_count']} cores ({machine['torch_threads']} torch threads), "
        f"torch {machine['torch']}, transformers {machine['transformers']}, trl {machine['trl']}, "
        f"commit {machine['git_commit']}",
        f"- Load average (1 min) during the run: {payload['load_average']['min']:.1f}-"
        f"{payload['load_average']['max']:.1f} (the machine is shared; ratios come from interleaved runs)",
        f"- Model: SmolLM2-135M-Instruct, fp32, sdpa, no gradient checkpointing, "
        f"OMP_WAIT_POLICY={settings['omp_wait_policy'] or 'unset'}; {settings['batch_size']} pairs per "
        f"optimizer step, max_length {settings['max_length']}; medians over {settings['measured_steps']} measured "
        f"steps x {settings['rounds']} rounds after {settings['warmup_steps']} warm-up step(s) per run",
        "- Data: synthetic UltraFeedback-like lengths (`bench/length_mix.py`), content tokens: "
        + "; ".join(f"{k} {v}" for k, v in payload["data_lengths"].items()),
        f"- Same batches for every method: {payload['same_batches']}",
        "",
        table,
        "",
        "Targets:",
        "",
        *targets,
        "",
        "What the figures mean and why a target is missed: `docs/packing.md`, section Benchmark.",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
