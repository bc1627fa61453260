#!/usr/bin/env python
"""Does AdaDPO beat DPO on a real model, offline? (`make bench-quality`)

1. Sample on-policy pairs from SmolLM2-135M-Instruct for the train half of IFEval's prompts (the fixed split by key
   in `adadpo.evaluation.ifeval`), ranked by IFEval's checkers from lm-eval (`scripts/generate_preferences.py`).
2. Train `dpo` and `adadpo` on them with identical settings and seed (`scripts/run_adadpo.py`, accelerate, CPU).
3. Evaluate base, DPO and AdaDPO on IFEval's held-out half (`scripts/evaluate.py`, greedy): IFEval's four numbers
   (prompt / instruction level, strict / loose), wins / losses / ties vs base, mean response length.
4. Print one table (plus AdaDPO vs DPO prompt by prompt) and write it to
   `bench/results/quality/full/lr<learning rate>/quality.json` and `.md`.

A re-run skips the stages whose output exists and refuses output made with other settings (`generation.json`,
`run.json` record them).

The held-out half is not the leaderboard protocol (all 541 prompts): compare these numbers across the three models,
not with published IFEval scores. IFEval data: `--ifeval_data` (default `../shared/data/ifeval_input_data.jsonl`).

    python bench/quality.py            # full: 55 min on 2 idle CPU cores (measured, see SIZES)
    python bench/quality.py --learning_rate 1e-4   # the same pairs, both losses at another learning rate
    python bench/quality.py --quick    # a few minutes, same pipeline, tiny sizes
"""

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

from adadpo.cli import evaluate, generate_preferences
from adadpo.demo import prepare_smollm2
from adadpo.evaluation.ifeval import METRICS, load_ifeval, unscorable
from adadpo.evaluation.stats import win_loss_tie
from adadpo.files import write_json_atomic, write_text_atomic
from adadpo.run_folder import RunFolder


ROOT = Path(__file__).resolve().parents[1]
IFEVAL_FILE = ROOT.parent / "shared" / "data" / "ifeval_input_data.jsonl"
SIZES = {
    # train prompts (None: all of IFEval's train half that can be scored here), samples per prompt, sampling tokens,
    # pairs trained on, pairs held out for the final reward accuracy / margin, held-out prompts (None: the whole
    # held-out half), eval tokens, epochs.
    # Measured (2026-12-02, 2 idle cores, `python bench/quality.py`): 55.0 min in all. Sampling 15.3 min (240
    # scorable train prompts x 4 samples of <= 64 tokens, 3.8 s per prompt; 88 of them not tied -> 88 pairs),
    # training 23.2 min (2 x 10 optimizer steps of 16 pairs, 8 in each epoch's last, ~65 s each, with the held-out
    # evaluations), evaluation 16.5 min (3 models x 266 held-out prompts, greedy, <= 128 tokens: ~1.2 s per prompt
    # per model). A further `--learning_rate` reuses the pairs and costs ~40 min.
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
    # The default, chosen before any IFEval run. In these 10 steps it moves beta_w only modestly (held-out mean
    # 0.102 at beta 0.1), so AdaDPO trains nearly like DPO; `--learning_rate 1e-4` moves it further (README).
    "learning_rate": 2.0e-5,
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


def check_or_record(path: Path, settings: dict, what: str, output_exists: bool) -> None:
    """A re-run skips the stages whose output exists; `path` records the settings that made them, so output made
    with other settings (a changed size, learning rate or pair file), or with no record of them, is refused instead
    of silently reused. The record is written before the stage runs; a stage that stopped halfway runs again."""
    settings = json.loads(json.dumps(settings))  # compare as JSON reads it back
    if not path.exists() and output_exists:
        raise SystemExit(
            f"{path.parent} holds {what} with no record ({path.name}) of the settings that made them. "
            f"Pass another --out, or delete {path.parent} to redo it."
        )
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded != settings:
            changed = sorted(k for k in settings.keys() | recorded.keys() if settings.get(k) != recorded.get(k))
            raise SystemExit(
                f"{path.parent} holds {what} made with other settings (changed: {', '.join(changed)}). "
                f"Pass another --out, or delete {path.parent} to redo it."
            )
    else:
        write_json_atomic(path, settings)


def train(loss_type: str, data: Path, model_dir: Path, run_dir: Path, size: dict, settings: dict) -> tuple[dict, bool]:
    """One run through `scripts/run_adadpo.py` (skipped when it finished before); its final held-out metrics and
    beta_w over training, and whether it ran now."""
    recipe = {
        **settings,
        "model_name_or_path": str(model_dir),
        "dataset_name": str(data),
        "loss_type": loss_type,
        "num_train_epochs": size["epochs"],
        "max_train_samples": size["max_pairs"],
        "test_split_size": size["eval_pairs"],
        "per_device_eval_batch_size": 8,
        "output_dir": str(run_dir / loss_type),
    }
    recipe_path = run_dir / f"{loss_type}.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    ran = not RunFolder(run_dir / loss_type).is_finished()
    if ran:
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
    history = json.loads(RunFolder(run_dir / loss_type).trainer_state.read_text())["log_history"]
    final = [entry for entry in history if "eval_rewards/accuracies" in entry][-1]
    steps = [entry for entry in history if "adadpo/beta_w_min" in entry]  # one entry per optimizer step
    return {
        "reward_accuracy": final["eval_rewards/accuracies"],
        "reward_margin": final["eval_rewards/margins"],
        "beta_w_mean": final.get("eval_adadpo/beta_w_mean"),  # = beta for dpo; the adapted coefficient for adadpo
        # Did the policy leave the reference? beta_w moves away from beta only as far as it did.
        "beta_w_min_train": min(entry["adadpo/beta_w_min"] for entry in steps),
        "beta_w_max_train": max(entry["adadpo/beta_w_max"] for entry in steps),
        # per-step shares averaged over steps (a short last step of an epoch counts as much as a full one)
        "clip_fraction_step_mean": sum(entry["adadpo/clip_fraction"] for entry in steps) / len(steps),
    }, ran


def head_to_head(answers: Path, model: str, baseline: str) -> dict:
    """`model` against `baseline` prompt by prompt on the held-out answers (IFEval's per-prompt strict score), and
    how many greedy responses differ at all."""
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    scored = [row for row in rows if row["scores"][model] is not None and row["scores"][baseline] is not None]
    record = win_loss_tie([row["scores"][model] for row in scored], [row["scores"][baseline] for row in scored])
    differing = sum(row["responses"][model] != row["responses"][baseline] for row in rows)
    return {"model": model, "baseline": baseline, **record, "responses_differing": differing, "prompts": len(rows)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline in a few minutes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality")
    parser.add_argument(
        "--ifeval_data", default=str(IFEVAL_FILE), help="IFEval's prompts: a local .jsonl or google/IFEval"
    )
    parser.add_argument(
        "--learning_rate",
        type=float,
        default=TRAIN_SETTINGS["learning_rate"],
        help="for both losses; each learning rate trains in its own folder on the same pairs",
    )
    args = parser.parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    out = args.out / ("quick" if args.quick else "full")
    run_dir = out / f"lr{args.learning_rate:g}"
    settings = {**TRAIN_SETTINGS, "learning_rate": args.learning_rate}
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    # 1. On-policy pairs (shared by every learning rate)
    model_dir = prepare_smollm2(ROOT / ".cache" / "smollm2-135m-instruct")
    prefs = out / "prefs.jsonl"
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
    check_or_record(out / "generation.json", {"args": gen_args}, "on-policy pairs", prefs.exists())
    reused = []
    if prefs.exists():
        reused.append("generate")
    else:
        generate_preferences.main(gen_args)
    num_pairs = sum(1 for _ in prefs.open())
    generated = time.time()

    # 2. Identical DPO and AdaDPO runs
    run_dir.mkdir(exist_ok=True)
    pairs_digest = hashlib.sha256(prefs.read_bytes()).hexdigest()
    losses = ("dpo", "adadpo")
    check_or_record(
        run_dir / "run.json",
        {"settings": settings, "sizes": size, "pairs_sha256": pairs_digest},
        "runs",
        any(RunFolder(run_dir / loss).is_finished() for loss in losses),
    )
    runs = {loss: train(loss, prefs, model_dir, run_dir, size, settings) for loss in losses}
    training = {loss: metrics for loss, (metrics, _) in runs.items()}
    retrained = any(ran for _, ran in runs.values())
    if not retrained:
        reused.append("train")
    trained = time.time()

    # 3. Held-out evaluation
    eval_args = [
        "--model_name_or_paths",
        str(model_dir),
        str(run_dir / "dpo"),
        str(run_dir / "adadpo"),
        "--model_names",
        "base",
        "dpo",
        "adadpo",
        "--prompts=ifeval:heldout",
        f"--ifeval_data={args.ifeval_data}",
        f"--max_new_tokens={size['eval_tokens']}",
        "--batch_size=40",
        "--dtype=float32",
        f"--output_dir={run_dir / 'eval'}",
    ]
    if size["eval_prompts"]:
        eval_args.append(f"--max_prompts={size['eval_prompts']}")
    results = run_dir / "eval" / "results.json"
    unscorable_here = len(unscorable(load_ifeval(args.ifeval_data, "heldout")))  # fewer once NLTK's punkt is there
    evaluation = {"args": eval_args, "unscorable_prompts": unscorable_here}
    check_or_record(run_dir / "evaluation.json", evaluation, "an evaluation", results.exists())
    if results.exists() and not retrained:  # a model trained now is always evaluated now
        summary = json.loads(results.read_text())
        reused.append("evaluate")
    else:
        summary = evaluate.main(eval_args)
    h2h = head_to_head(run_dir / "eval" / "answers.jsonl", "adadpo", "dpo")

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
                **training.get(model["name"], dict.fromkeys(next(iter(training.values())))),
            }
        )
    header = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    table = header + "".join("| " + " | ".join(fmt(v) for v in row.values()) + " |\n" for row in rows)
    table += (
        f"\nadadpo vs dpo (per-prompt IFEval strict score): {h2h['wins']} / {h2h['losses']} / {h2h['ties']} "
        f"(p = {h2h['sign_test_p']:.3f}); greedy responses differ on {h2h['responses_differing']} of "
        f"{h2h['prompts']} prompts\n"
    )
    result = {
        "mode": "quick" if args.quick else "full",
        "pairs": num_pairs,
        "trained_pairs": min(num_pairs - size["eval_pairs"], size["max_pairs"]),
        "reward_eval_pairs": size["eval_pairs"],
        "held_out_prompts": summary["num_prompts"],
        "held_out_prompts_scored": summary["num_scored"],
        "unscored_reason": summary["unscored_reason"],
        "rows": rows,
        "adadpo_vs_dpo": h2h,
        "train_settings": settings,
        "sizes": size,
        "stages_reused": reused,  # their time is in the log of the run that made them, not here
        "wall_seconds": {
            "generate": generated - start,
            "train": trained - generated,
            "evaluate": time.time() - trained,
            "total": time.time() - start,
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/quality.py"
        + (" --quick" if args.quick else "")
        + (
            "" if args.learning_rate == TRAIN_SETTINGS["learning_rate"] else f" --learning_rate {args.learning_rate:g}"
        ),
    }
    write_json_atomic(run_dir / "quality.json", result)
    write_text_atomic(run_dir / "quality.md", table)
    print(
        f"\n{table}\n{num_pairs} on-policy pairs, {summary['num_prompts']} held-out prompts "
        f"({summary['num_scored']} scored), "
        f"{result['wall_seconds']['total'] / 60:.1f} min. Written to {run_dir}/quality.json"
    )
    return result


if __name__ == "__main__":
    main()
