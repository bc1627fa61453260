#!/usr/bin/env python
"""Where does a training step's time go? torch.profiler over one optimizer step (after warm-up) of one method.

    OMP_WAIT_POLICY=PASSIVE python bench/profile_step.py --method adadpo-packed --batch-size 2 --max-length 1024

Prints the top operators by self CPU time and the share of a few operator families (matmuls, attention kernels, the
fused LM head): the breakdown docs/packing.md uses to explain the benchmark's packed-vs-padded ratio.
"""

import argparse
import json
import tempfile

from length_mix import make_length_mix_rows
from throughput_harness import METHODS, build_bench_trainer


FAMILIES = {
    "matmul (linear layers, LM head)": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"),
    "attention (sdpa kernels)": ("scaled_dot_product", "flash_attention", "_efficient_attention"),
    "fused LM head (incl. its matmuls)": ("ChunkedLogProb",),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=".cache/smollm2-135m-instruct")
    parser.add_argument("--method", default="adadpo", choices=list(METHODS))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--num-pairs", type=int, default=64)
    parser.add_argument("--warmup-steps", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=int, default=20)
    return parser.parse_args(argv)


def family_shares(events) -> dict[str, float]:
    """Each operator family's time over the step's total self CPU time: self time for leaf ops (matmul, attention
    kernels), total time (children included) for the fused LM head's autograd functions, which overlap the matmuls."""
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    shares = {}
    for family, needles in FAMILIES.items():
        matching = [e for e in events if any(n in e.key for n in needles)]
        inclusive = needles == ("ChunkedLogProb",)
        shares[family] = sum(e.cpu_time_total if inclusive else e.self_cpu_time_total for e in matching) / total
    return shares


def main(argv=None):
    args = parse_args(argv)
    import datasets
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, attn_implementation="sdpa")
    dataset = datasets.Dataset.from_list(make_length_mix_rows(tokenizer, args.num_pairs, seed=args.seed))
    spec = {
        "method": args.method,
        "output_dir": tempfile.mkdtemp(prefix="adadpo-profile-"),
        "batch_size": args.batch_size,
        "warmup_steps": args.warmup_steps,
        "measured_steps": 1,
        "max_length": args.max_length,
        "seed": args.seed,
        "bf16": False,
        "device": "cpu",
    }
    trainer = build_bench_trainer(spec, model, tokenizer, dataset)
    profiler = profile(activities=[ProfilerActivity.CPU], record_shapes=False)

    class ProfileLastStep(TrainerCallback):
        def on_step_begin(self, a, state, control, **kwargs):
            if state.global_step == args.warmup_steps:
                profiler.__enter__()

        def on_step_end(self, a, state, control, **kwargs):
            if state.global_step == args.warmup_steps + 1:
                profiler.__exit__(None, None, None)

    trainer.add_callback(ProfileLastStep())
    trainer.train()
    events = profiler.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))
    shares = family_shares(events)
    print(json.dumps({"method": args.method, "self_cpu_share": {k: round(v, 3) for k, v in shares.items()}}, indent=2))


if __name__ == "__main__":
    main()
