#!/usr/bin/env python
"""Does AdaDPO beat DPO on a real model, offline? (`make bench-quality`)

1. Sample on-policy pairs from SmolLM2-135M-Instruct for the train half of IFEval's prompts (the fixed split by key
   in `adadpo.evaluation.ifeval`), ranked by IFEval's checkers from lm-eval (`scripts/generate_preferences.py`).
2. Train `dpo` and `adadpo` on them with identical settings and seed (`scripts/run_adadpo.py`, accelerate, CPU).
3. Evaluate base, DPO and AdaDPO on IFEval's held-out half (`scripts/evaluate.py`, greedy): IFEval's four numbers
   (prompt / instruction level, strict / loose), wins / losses / ties vs base, mean response length.
4. Print one table and write it to `bench/results/quality/quality.json` and `.md`.

The held-out half is not the leaderboard protocol (all 541 prompts): compare these numbers across the three models,
not with published IFEval scores. IFEval data: `--ifeval_data` (default `../shared/data/ifeval_input_data.jsonl`).

    python bench/quality.py            # full: ~45 min on 2 idle CPU cores (an estimate, see SIZES), budget < 60 min
    python bench/quality.py --quick    # a few minutes, same pipeline, tiny sizes
"""

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

from adadpo.demo import prepare_smollm2
from adadpo.evaluation.ifeval import METRICS


ROOT = Path(__file__).resolve().parents[1]
IFEVAL_FILE = ROOT.parent / "shared" / "data" / "ifeval_input_data.jsonl"
SIZES = {
    # train prompts (None: all of IFEval's train half that can be scored here), samples per prompt, sampling tokens,
    # pairs trained on, pairs held out for the final reward accuracy / margin, held-out prompts (None: the whole
    # held-out half), eval tokens, epochs.
    # CPU decoding is latency-bound (~0.5-1 s per step for SmolLM2-135M on 2 cores), so prompts are batched wide
    # (32 per batch: ~1.9 s per prompt for 4 samples); training costs ~3 s per pair per epoch per loss. The previous
    # (own-prompt) version took 41 min for 320 prompts, 175 pairs and 80 held-out prompts at 96 tokens; IFEval's
    # halves are 275 / 266 prompts (242 / 234 scorable without NLTK's punkt), and evaluating 266 prompts x 3 models
    # at 128 tokens costs ~8 min, so the sizes below should land near 45 min (estimated from those rates; this size
    # has not been run end to end yet).
    "full": {
        "train_prompts": None,
        "num_samples": 4,
        "gen_tokens": 64,
        "max_pairs": 320,
        "eval_pairs": 16,
        "eval_prompts": None,
        "eval_tokens": 128,
        "epochs": 2,
    },
    "quick": {
        "train_prompts": 48,
        "num_samples": 2,
        "gen_tokens": 48,
        "max_pairs": 16,
        "eval_pairs": 2,
        "eval_prompts": 12,
        "eval_tokens": 48,
        "epochs": 1,
    },
}
TRAIN_SETTINGS = {  # identical for both losses; only loss_type differs
    "dtype": "float32",
    "attn_implementation": "sdpa",
    "beta": 0.1,
    "learning_rate": 2.0e-5,  # a 135M model and ~20 steps: high enough that the policy moves off the reference
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.1,
    "per_device_train_batch_size": 4,
    "global_batch_size": 16,
    "max_length": 384,
    "seed": 42,
    "use_cpu": True,
    "bf16": False,
    "gradient_checkpointing": False,
    "logging_steps": 1,
    "report_to": "none",
    "save_strategy": "no",
    "eval_strategy": "epoch",  # on the held-out pairs: the final reward accuracy and margin
    "disable_tqdm": False,
    "dataloader_num_workers": 0,
}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train(loss_type: str, data: Path, model_dir: Path, out: Path, size: dict) -> dict:
    recipe = {
        **TRAIN_SETTINGS,
        "model_name_or_path": str(model_dir),
        "dataset_name": str(data),
        "loss_type": loss_type,
        "num_train_epochs": size["epochs"],
        "max_train_samples": size["max_pairs"],
        "test_split_size": size["eval_pairs"],
        "per_device_eval_batch_size": 8,
        "output_dir": str(out / loss_type),
    }
    recipe_path = out / f"{loss_type}.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    if not (out / loss_type / "all_results.json").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "accelerate.commands.launch",
                "--config_file",
                str(ROOT / "accelerate_configs" / "cpu.yaml"),
                str(ROOT / "scripts" / "run_adadpo.py"),
                "--config",
                str(recipe_path),
            ],
            check=True,
            cwd=ROOT,
        )
    state = json.loads((out / loss_type / "trainer_state.json").read_text())
    final = [entry for entry in state["log_history"] if "eval_rewards/accuracies" in entry][-1]
    return {
        "reward_accuracy": final["eval_rewards/accuracies"],
        "reward_margin": final["eval_rewards/margins"],
        "beta_w_mean": final.get("eval_adadpo/beta_w_mean"),  # = beta for dpo; the adapted coefficient for adadpo
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline in a few minutes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality")
    parser.add_argument(
        "--ifeval_data", default=str(IFEVAL_FILE), help="IFEval's prompts: a local .jsonl or google/IFEval"
    )
    args = parser.parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    out = args.out / ("quick" if args.quick else "full")
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    # 1. On-policy pairs
    model_dir = prepare_smollm2(ROOT / ".cache" / "smollm2-135m-instruct")
    prefs = out / "prefs.jsonl"
    if not prefs.exists():
        gen_args = [
            f"--model_name_or_path={model_dir}",
            "--prompts=ifeval:train",
            f"--ifeval_data={args.ifeval_data}",
            f"--output_path={prefs}",
            f"--num_samples={size['num_samples']}",
            f"--max_new_tokens={size['gen_tokens']}",
            "--temperature=0.9",
            "--top_p=0.95",
            "--seed=42",
            "--batch_size=32",
            "--dtype=float32",
        ]
        if size["train_prompts"]:
            gen_args.append(f"--max_prompts={size['train_prompts']}")
        load_script("generate_preferences").main(gen_args)
    num_pairs = sum(1 for _ in prefs.open())
    generated = time.time()

    # 2. Identical DPO and AdaDPO runs
    training = {loss: train(loss, prefs, model_dir, out, size) for loss in ("dpo", "adadpo")}
    trained = time.time()

    # 3. Held-out evaluation
    eval_args = [
        "--model_name_or_paths",
        str(model_dir),
        str(out / "dpo"),
        str(out / "adadpo"),
        "--model_names",
        "base",
        "dpo",
        "adadpo",
        "--prompts=ifeval:heldout",
        f"--ifeval_data={args.ifeval_data}",
        f"--max_new_tokens={size['eval_tokens']}",
        "--batch_size=40",
        "--dtype=float32",
        f"--output_dir={out / 'eval'}",
    ]
    if size["eval_prompts"]:
        eval_args.append(f"--max_prompts={size['eval_prompts']}")
    summary = load_script("evaluate").main(eval_args)

    # 4. One table
    rows = []
    for model in summary["models"]:
        rows.append(
            {
                "model": model["name"],
                **{metric: model["ifeval"][metric] for metric in METRICS},
                "win_rate_vs_base": model.get("win_rate_vs_base"),
                "wins_losses_ties_vs_base": "/".join(str(model[f"{k}_vs_base"]) for k in ("wins", "losses", "ties")),
                "sign_test_p_vs_base": model["sign_test_p_vs_base"],
                "mean_response_tokens": model["mean_response_tokens"],
                **training.get(model["name"], dict.fromkeys(("reward_accuracy", "reward_margin", "beta_w_mean"))),
            }
        )
    header = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    table = header + "".join("| " + " | ".join(fmt(v) for v in row.values()) + " |\n" for row in rows)
    result = {
        "mode": "quick" if args.quick else "full",
        "pairs": num_pairs,
        "trained_pairs": min(num_pairs - size["eval_pairs"], size["max_pairs"]),
        "reward_eval_pairs": size["eval_pairs"],
        "held_out_prompts": summary["num_prompts"],
        "held_out_prompts_scored": summary["num_scored"],
        "unscored_reason": summary["unscored_reason"],
        "rows": rows,
        "train_settings": TRAIN_SETTINGS,
        "sizes": size,
        "wall_seconds": {
            "generate": generated - start,
            "train": trained - generated,
            "evaluate": time.time() - trained,
            "total": time.time() - start,
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/quality.py" + (" --quick" if args.quick else ""),
    }
    (out / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "quality.md").write_text(table)
    print(
        f"\n{table}\n{num_pairs} on-policy pairs, {summary['num_prompts']} held-out prompts "
        f"({summary['num_scored']} scored), "
        f"{result['wall_seconds']['total'] / 60:.1f} min. Written to {out}/quality.json"
    )
    return result


if __name__ == "__main__":
    main()
