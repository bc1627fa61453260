"""Shared benchmark harness: one training method per fresh process, timed per optimizer step.

A worker (`python bench/throughput_harness.py SPEC.json RESULT.json`) builds one trainer (stock TRL `DPOTrainer` or
the project's `AdaDPOTrainer`), runs `warmup_steps + measured_steps` optimizer steps and writes, per step: wall seconds
(`TrainerCallback.on_step_begin` -> `on_step_end`, CUDA-synchronized on GPU), CPU seconds of the process over the same
interval (all threads; on a shared machine this inflates far less than wall time when other jobs compete for the
cores), real (non-pad) tokens and computed (incl. pad) tokens of the batch the step consumed, plus peak memory. A fresh process per method makes
peak RSS (`getrusage(RUSAGE_SELF).ru_maxrss`) a per-method figure.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    label: str
    stock_trl: bool = False
    loss_type: str = "dpo"
    padding_free: bool = False
    token_budget: bool = False  # max_tokens_per_batch = max_length (several packed rows instead of one)


METHODS = {
    "trl-dpo": Method("stock TRL 1.16 DPOTrainer (sigmoid)", stock_trl=True),
    "dpo": Method("adadpo `dpo`", loss_type="dpo"),
    "adadpo": Method("adadpo `adadpo` padded", loss_type="adadpo"),
    "adadpo-packed": Method("adadpo `adadpo` packed", loss_type="adadpo", padding_free=True),
    "adadpo-packed-budget": Method(
        "adadpo `adadpo` packed, max_tokens_per_batch=max_length",
        loss_type="adadpo",
        padding_free=True,
        token_budget=True,
    ),
}
BASELINE = "trl-dpo"


def count_tokens(batch: dict) -> tuple[int, int]:
    """(real, computed) tokens of a padded or packed preference batch."""
    if batch.get("attention_mask") is not None:
        return int(batch["attention_mask"].sum()), batch["input_ids"].numel()
    return int((batch["sequence_ids"] >= 0).sum()), batch["input_ids"].numel()


class CountingCollator:
    """Wraps a collator and records each batch's token counts, in collation order (= optimizer-step order with
    gradient_accumulation_steps=1, whatever the dataloader's prefetching)."""

    def __init__(self, collator):
        self.collator, self.counts = collator, []

    def __call__(self, examples):
        batch = self.collator(examples)
        self.counts.append(count_tokens(batch))
        return batch


def _step_timer(synchronize):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self.cpu_seconds, self._start = [], [], None

        def on_step_begin(self, args, state, control, **kwargs):
            synchronize()
            self._start = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            synchronize()
            self.seconds.append(time.perf_counter() - self._start[0])
            self.cpu_seconds.append(time.process_time() - self._start[1])

    return StepTimer()


def matmul_parameters(model) -> int:
    """Parameters that take part in matmuls: all (tied ones once) minus the input embedding, a lookup, unless it is
    tied to the LM head (then the LM head matmul uses it)."""
    total = sum(p.numel() for p in model.parameters())
    embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings()
    return total if head is not None and head.weight is embedding else total - embedding.numel()


def build_bench_trainer(spec: dict, model, tokenizer, dataset):
    """The trainer of `spec["method"]` with everything else shared: batch, length, seed, precision, no saving."""
    method = METHODS[spec["method"]]
    common = {
        "output_dir": spec["output_dir"],
        "per_device_train_batch_size": spec["batch_size"],
        "gradient_accumulation_steps": 1,
        "max_steps": spec["warmup_steps"] + spec["measured_steps"],
        "max_length": spec["max_length"],
        "learning_rate": 1.0e-6,
        "beta": 0.1,
        "bf16": spec["bf16"],
        "use_cpu": spec["device"] == "cpu",
        "gradient_checkpointing": False,
        "save_strategy": "no",
        "report_to": "none",
        "logging_steps": 1,
        "seed": spec["seed"],
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    if method.stock_trl:
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(loss_type=["sigmoid"], **common)
        return DPOTrainer(model, args=args, train_dataset=dataset, processing_class=tokenizer)
    from adadpo.config import AdaDPOConfig
    from adadpo.training.trainer import AdaDPOTrainer

    args = AdaDPOConfig(
        loss_type=method.loss_type,
        padding_free=method.padding_free,
        max_tokens_per_batch=spec["max_length"] if method.token_budget else None,
        **common,
    )
    return AdaDPOTrainer(model, args=args, train_dataset=dataset, processing_class=tokenizer)


def run_worker(spec: dict) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    datasets.disable_progress_bars()
    on_gpu = spec["device"] == "cuda"
    dtype = torch.bfloat16 if spec["bf16"] else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(
        spec["model_dir"], dtype=dtype, attn_implementation=spec["attn_implementation"]
    )
    with open(spec["data_path"]) as f:
        dataset = datasets.Dataset.from_list([json.loads(line) for line in f])
    trainer = build_bench_trainer(spec, model, tokenizer, dataset)
    counter = trainer.data_collator = CountingCollator(trainer.data_collator)
    timer = _step_timer(torch.cuda.synchronize if on_gpu else lambda: None)
    trainer.add_callback(timer)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    steps = len(timer.seconds)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "method": spec["method"],
        "step_seconds": timer.seconds,
        "step_cpu_seconds": timer.cpu_seconds,
        "real_tokens": [real for real, _ in counter.counts[:steps]],
        "computed_tokens": [computed for _, computed in counter.counts[:steps]],
        "first_loss": losses[0] if losses else None,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux reports KiB
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if on_gpu else None,
        "matmul_parameters": matmul_parameters(trainer.model),
        "needs_reference": bool(getattr(trainer, "ref_model", None) is not None),
    }


def spawn_worker(spec: dict, work_dir: str, log_name: str) -> dict:
    """Run one method in a fresh Python process; its output goes to `<work_dir>/<log_name>.log`."""
    spec_path, result_path = (os.path.join(work_dir, f"{log_name}.{kind}.json") for kind in ("spec", "result"))
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = {**os.environ, "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    if spec.get("omp_wait_policy"):
        env["OMP_WAIT_POLICY"] = spec["omp_wait_policy"]
    with open(os.path.join(work_dir, f"{log_name}.log"), "w") as log:
        done = subprocess.run(
            [sys.executable, os.path.abspath(__file__), spec_path, result_path], stdout=log, stderr=log, env=env
        )
    if done.returncode != 0:
        raise RuntimeError(f"Benchmark worker {log_name} failed (exit {done.returncode}); see {log.name}.")
    with open(result_path) as f:
        return json.load(f)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        result = run_worker(json.load(f))
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)


def benchmark_parser(
    doc: str, *, batch_size: int, warmup_steps: int, measured_steps: int, rounds: int, max_length: int, num_pairs: int
) -> argparse.ArgumentParser:
    """The options every throughput benchmark takes (model, methods, steps, rounds, data size), with its defaults;
    each benchmark adds its own and calls `check_benchmark_args`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model-dir", default=".cache/smollm2-135m-instruct", help="HF model folder (prepared if absent)"
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--batch-size", type=int, default=batch_size, help="preference pairs per optimizer step")
    parser.add_argument("--warmup-steps", type=int, default=warmup_steps)
    parser.add_argument("--measured-steps", type=int, default=measured_steps, help="per run; pooled over rounds")
    parser.add_argument(
        "--rounds", type=int, default=rounds, help="run the method order this many times, reversed every other time"
    )
    parser.add_argument("--max-length", type=int, default=max_length)
    parser.add_argument("--num-pairs", type=int, default=num_pairs, help="size of the synthetic data set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    return parser


def check_benchmark_args(parser: argparse.ArgumentParser, args) -> None:
    if BASELINE not in args.methods:
        parser.error(f"--methods must include the baseline {BASELINE!r}: every ratio is relative to it.")
    if args.measured_steps < 1 or args.rounds < 1 or args.warmup_steps < 0:
        parser.error("--measured-steps and --rounds must be >= 1, --warmup-steps >= 0.")


def write_data_and_base_spec(args, tokenizer, rows=None) -> tuple[str, dict]:
    """A temporary work folder holding the length-mixed pairs (`rows`, else made from the options), and the worker
    spec entries every benchmark shares."""
    from length_mix import make_length_mix_rows

    from adadpo.files import write_jsonl_atomic

    work_dir = tempfile.mkdtemp(prefix="adadpo-bench-")
    data_path = os.path.join(work_dir, "pairs.jsonl")
    rows = rows if rows is not None else make_length_mix_rows(tokenizer, args.num_pairs, seed=args.seed)
    write_jsonl_atomic(data_path, rows)
    return work_dir, {
        "model_dir": os.path.abspath(args.model_dir),
        "data_path": data_path,
        "batch_size": args.batch_size,
        "warmup_steps": args.warmup_steps,
        "measured_steps": args.measured_steps,
        "max_length": args.max_length,
        "seed": args.seed,
    }
