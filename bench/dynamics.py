#!/usr/bin/env python
"""The AdaDPO paper's Figure 2 at small scale (`make bench-dynamics`): DPO vs AdaDPO training dynamics on real human
preference pairs, with seeds, intervals and a verdict rule written before the run (docs/evaluation.md).

SmolLM2-135M-Instruct trained with `dpo` and `adadpo` (Listing 1, C = 2) on Anthropic HH-RLHF harmless-base pairs.
Every run goes through `scripts/run_adadpo.py`; recipes differ only in `loss_type`, `beta`, `seed` and `output_dir`.

Seeded (`make bench-dynamics`): each seed orders the training pairs; every seed holds out the same pairs (a mixture
with its own seed draws them), so the pilot can choose the learning rate and step count on the others:

    make bench-dynamics-pilot   # DPO at 3 rates on the training split only -> pilot/pilot.{json,md}, pilot/plots/
    make bench-dynamics         # 3 seeds x {dpo, adadpo} x β {0.05, 0.01} at the pilot's choice, then per run the
                                # final weights' per-pair values on the 300 held-out pairs and on trained pairs

    dynamics_seeded.{json,md}             the pre-registered verdicts (bench/dynamics_stats.py), the mechanism table
    plots/training_dynamics_seeded.png    Figure 2's panels, mean over seeds with 95% bands
    plots/mechanism.png                   per-token log π/π_ref of chosen and rejected, training and held-out; the
                                          per-token gradient balance

A run's per-pair values are kept in its folder (`held_out_values.json`) and a finished run is reused only if its
recipe is unchanged, so `--betas 0.05` and `--betas 0.01` can run apart and a later call summarises both.

One seed (the earlier bench, kept for comparison): `python bench/dynamics.py` (~25 min: 24 steps, 40 held-out pairs)
writes dynamics.{json,md} and plots/{training_dynamics,grad_balance}.png; `--quick` runs either mode on a tiny random
model in seconds (tested in CI).
"""

import argparse
import gc
import gzip
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import yaml

from adadpo.files import write_jsonl_atomic, write_text_atomic
from adadpo.run_folder import RunFolder, SweepFolder


sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/dynamics_stats.py


# Other jobs may share the cores: OpenMP threads that spin while waiting slow everyone down (set before torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
HH_RLHF = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
LOSSES = ("dpo", "adadpo")
HELD_OUT_SEED = 0  # draws the seeded runs' held-out pairs, the same for every seed
BETAS = (0.05, 0.01)
# Sizing (2 idle CPU cores, fp32, SmolLM2-135M, packed rows): a forward pass over 8 single-turn HH pairs (chosen and
# rejected, ~55 tokens each) takes ~2.7 s and a training step ~3x that (~9 s). The reference log-probs are computed
# once for the 320 + 40 drawn pairs (45 batches, ~2 min) and shared by all four runs through the cache. Per run: 24
# steps x ~9 s = 3.6 min of training + 5 evaluations of the 40 held-out pairs (at steps 5, 10, 15, 20 and the final
# one at 24; 5 batches, ~14 s each) = 1.2 min; 4 runs ~20 min, ~25 min with loading and plotting, which leaves room
# in the 45-minute budget for a machine shared with other jobs (measured: see README). Each step sees new pairs (one
# pass over 192 of them); `--max_steps 40` trains on all 320 drawn pairs and reuses the cached reference pass.
SIZES = {
    "full": {
        "train_pairs": 320,  # drawn (and given reference log-probs); max_steps x batch of them are trained on
        "eval_pairs": 40,
        "max_tokens": 96,  # per sequence (prompt + response); single-turn pairs only
        "batch": 8,
        "max_steps": 24,
        "eval_steps": 5,
        "epochs": 1,
        "pilot_eval_pairs": 150,  # the pilot validates on these many of the training split's pairs
    },
    "quick": {
        "train_pairs": 16,
        "eval_pairs": 8,
        "max_tokens": 96,
        "batch": 4,
        "max_steps": 4,
        "eval_steps": 2,
        "epochs": 1,
        "pilot_eval_pairs": 4,
        "learning_rate": 1.0e-3,  # a random tiny model: large steps, so that beta_w moves within 4 steps
    },
}
TRAIN_SETTINGS = {  # identical for all four runs; only loss_type, beta and output_dir differ
    "dtype": "float32",
    "attn_implementation": "sdpa",
    # One rate for all runs, high enough that a 135M model leaves the reference within 40 steps: after 4 steps at
    # 5e-5 the held-out per-token log-ratio gap had moved only ~0.02 nats, and beta_w spreads only once that gap is
    # a sizable fraction of ln 2 (the clip C = 2).
    "learning_rate": 1.0e-4,
    "lr_scheduler_type": "constant_with_warmup",
    "warmup_steps": 2,
    "adadpo_clip": 2.0,
    "adadpo_length_normalize": True,  # Listing 1 (Stable AdaDPO)
    "max_length": 256,
    "padding_free": True,
    "precompute_ref_log_probs": True,  # one reference pass, shared through the cache by all four runs
    "seed": 42,
    "use_cpu": True,
    # Mixed precision as on GPUs (fp32 weights, bf16 autocast). On this CPU (AMX) it halves a training step and
    # cuts a forward pass ~2.7x against fp32 (SmolLM2-135M, 16 sequences of 110 tokens: 7.1 vs 14.1 s, 1.1 vs 3.0 s)
    "bf16": True,
    "activation_checkpointing": False,
    "logging_steps": 1,
    "report_to": "none",
    "eval_strategy": "steps",
    "save_strategy": "no",
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
}
# Figure 2's panels, and which direction the paper reports for AdaDPO at matched beta and learning rate.
TRAINED_BATCHES = 20  # the mechanism on trained pairs: those of the first 20 steps (160 pairs at batch 8)
PANELS = (
    ("eval_loss", "eval loss", "lower"),
    ("eval_rewards/accuracies", "reward accuracy", "higher"),
    ("eval_kl/beta_margin", "β×KL margin", "higher"),
    ("eval_rewards/margins", "reward margin", "higher"),
)


def single_turn_pairs(
    source: Path, tokenizer, max_tokens: int, count: int, seed: int, multi_turn: bool = False
) -> list[dict]:
    """`count` HH-RLHF pairs with one Human turn (`multi_turn`: any number), different completions and at most
    `max_tokens` tokens per side, drawn in a fixed shuffled order (implicit-prompt format, as in the file). The
    harmless-base test file holds 490 single-turn pairs within 96 tokens; with every turn count, 1,459 within 192."""
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    random.Random(seed).shuffle(rows)
    picked = []
    for row in rows:
        chosen, rejected = row["chosen"], row["rejected"]
        turns = {chosen.count("\n\nHuman:"), rejected.count("\n\nHuman:")}
        if chosen == rejected or (not multi_turn and turns != {1}):
            continue
        if max(len(tokenizer(text)["input_ids"]) for text in (chosen, rejected)) > max_tokens:
            continue
        picked.append({"chosen": chosen, "rejected": rejected})
        if len(picked) == count:
            return picked
    kind = "" if multi_turn else "single-turn "
    raise ValueError(
        f"{source} has only {len(picked)} {kind}pairs within {max_tokens} tokens; {count} needed"
        + ("" if multi_turn else " (--multi_turn admits every turn count)")
    )


def run_name(loss: str, beta: float, seed: int | None) -> str:
    return f"{loss}-beta{beta:g}" + ("" if seed is None else f"-seed{seed}")


def held_out_mixture(data: Path, eval_pairs: int) -> dict:
    """The seeded runs' data: a mixture whose own seed draws the held-out split, the same whatever the run's seed."""
    return {"datasets": [{"path": str(data)}], "seed": HELD_OUT_SEED, "test_split_size": eval_pairs}


def run_training(
    loss: str, beta: float, data: Path, model_dir: Path, out: Path, size: dict, seed=None, name=None
) -> Path:
    name = name or run_name(loss, beta, seed)
    recipe = {
        **TRAIN_SETTINGS,
        "model_name_or_path": str(model_dir),
        # Seeded runs hold out the same pairs whatever the seed (a mixture's own seed draws the split; the run's seed
        # orders the training pairs), so a pilot on the other pairs never sees them; one run: the run's seed draws it
        **(
            {"dataset_name": str(data), "test_split_size": size["eval_pairs"]}
            if seed is None
            else {"dataset_mixture": held_out_mixture(data, size["eval_pairs"])}
        ),
        "max_train_samples": size["train_pairs"],
        "per_device_train_batch_size": size["batch"],
        "global_batch_size": size["batch"],
        "per_device_eval_batch_size": size["batch"],  # packed rows: attention cost grows with the square of a batch
        "eval_steps": size["eval_steps"],
        "num_train_epochs": size["epochs"],
        "max_steps": size["max_steps"],
        "learning_rate": size.get("learning_rate", TRAIN_SETTINGS["learning_rate"]),
        "ref_logps_cache_dir": str(SweepFolder(out).ref_cache),
        "loss_type": loss,
        "beta": beta,
        "output_dir": str(out / name),
        "run_name": name,
        **({} if seed is None else {"seed": seed}),  # the data order of this seed
        # a scheduled evaluation at the last step is the final one: not repeated at the end
        **({"do_eval": False} if size["max_steps"] % size["eval_steps"] == 0 else {}),
    }
    recipe_path = SweepFolder(out).recipe(name)  # laid out as a sweep folder, so the plots find each run's recipe
    text = yaml.safe_dump(recipe, sort_keys=False)
    finished = RunFolder(out / name).is_finished()
    if finished and (not recipe_path.exists() or recipe_path.read_text() != text):  # never reuse a stale run
        raise ValueError(
            f"{out / name} was trained with other settings than these; use another --out, or delete that run folder."
        )
    write_text_atomic(recipe_path, text)
    if not finished:
        # In this process (one CPU process is what `accelerate launch` would start here too): the libraries are
        # imported once for all four runs instead of once per run.
        from adadpo.cli import run_adadpo as script

        argv = ["--config", str(recipe_path)]
        script.main(*script.parse_args(argv), argv=argv)
        gc.collect()
    return out / name


def held_out_values(run_dir: Path, recipe_path: Path) -> dict[str, list[float]]:
    """Per pair, with the final weights. Held-out pairs: the run's own loss, reward accuracy (the policy prefers the
    chosen response more than the reference does), the β×KL margin (plain β, both losses) and the per-token change
    of the chosen and the rejected log-probability from the reference. Trained pairs (those of the first
    `TRAINED_BATCHES` steps, in the run's own order, trained on at least that long before the end): the same two
    changes. The trainer is rebuilt from the run's recipe (so the split, the data order, tokenization and cached
    reference log-probs are the run's own) with the final weights loaded."""
    import itertools

    import torch
    from safetensors.torch import load_file

    from adadpo.recipe import parse_args
    from adadpo.training.build import build_trainer
    from adadpo.training.logps import sequence_logps

    argv = ["--config", str(recipe_path), f"--output_dir={run_dir / 'held-out-eval'}", "--eval_strategy=no"]
    script_args, training_args, model_args = parse_args(argv)
    trainer = build_trainer(script_args, training_args, model_args).trainer
    missing, unexpected = trainer.model.load_state_dict(load_file(run_dir / "model.safetensors"), strict=False)
    tied = {"lm_head.weight"} if trainer.model.config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:  # only a tied head may be absent from the saved weights
        raise ValueError(f"{run_dir}: the final weights do not fit the model ({missing=}, {unexpected=})")
    trainer.model.eval()
    values: dict[str, list[float]] = {}
    beta = training_args.beta
    # the first epoch's order (the sampler is seeded by the run's seed); one micro-batch per step in these recipes
    trained = itertools.islice(trainer.get_train_dataloader(), min(TRAINED_BATCHES, training_args.max_steps))
    passes = (("held-out", trainer.get_eval_dataloader(trainer.eval_dataset)), ("trained", trained))
    with torch.no_grad(), trainer.accelerator.autocast():  # the precision the trainer's own evaluation runs in
        for split, batches in passes:
            for batch in batches:
                batch = trainer.on_device(batch)
                policy = sequence_logps(trainer.model, batch, ld_alpha=training_args.ld_alpha)
                chosen, rejected = policy.logps.chunk(2)
                chosen_len, rejected_len = policy.lengths.chunk(2)
                ref_chosen, ref_rejected = trainer.reference_logps(batch)
                per_pair = {
                    f"{split} chosen log-prob change per token": (chosen - ref_chosen) / chosen_len.clamp(min=1),
                    f"{split} rejected log-prob change per token": (rejected - ref_rejected)
                    / rejected_len.clamp(min=1),
                    f"{split} reference chosen log-prob": ref_chosen,  # identifies the pair
                }
                if split == "held-out":
                    out = trainer.loss_fn(
                        policy_chosen_logps=chosen, policy_rejected_logps=rejected, chosen_lengths=chosen_len,
                        rejected_lengths=rejected_len, ref_chosen_logps=ref_chosen, ref_rejected_logps=ref_rejected,
                        training=False,
                    )  # fmt: skip
                    log_ratio_margin = (chosen - ref_chosen) - (rejected - ref_rejected)
                    per_pair |= {
                        "eval loss": out.losses,
                        "reward accuracy": (log_ratio_margin > 0).float(),
                        "β×KL margin": beta * log_ratio_margin,
                    }
                for key, tensor in per_pair.items():
                    values.setdefault(key, []).extend(tensor.float().cpu().tolist())
    del trainer
    gc.collect()
    return values


HELD_OUT_VALUES_VERSION = 2  # bump when `held_out_values` computes anything differently: older files are recomputed


def cached_held_out_values(run_dir: Path, recipe_path: Path) -> dict[str, list[float]]:
    """`held_out_values`, kept in the run folder with what they were computed from (this code's version, the recipe,
    the final weights' size and modification time); computed again when any of these differ."""
    if not RunFolder(run_dir).is_finished():
        raise ValueError(f"{run_dir} has not finished training; its per-pair values would be of unfinished weights.")
    weights = (run_dir / "model.safetensors").stat()
    key = {
        "version": HELD_OUT_VALUES_VERSION,
        "trained_batches": TRAINED_BATCHES,
        "recipe": recipe_path.read_text(),
        "weights": [weights.st_size, weights.st_mtime_ns],
    }
    cache = run_dir / "held_out_values.json"
    stored = json.loads(cache.read_text()) if cache.is_file() else {}
    if stored.get("key") == key:
        return stored["values"]
    values = held_out_values(run_dir, recipe_path)
    write_text_atomic(cache, json.dumps({"key": key, "values": values}))
    return values


def held_out_pairs_match(values: dict[tuple[str, float, int], dict]) -> None:
    """Per-pair values are paired by position: every run must list the same held-out pairs in the same order (each
    pair's reference log-prob identifies it; the seeds share the held-out split)."""
    orders = {key: run["held-out reference chosen log-prob"] for key, run in values.items()}
    first_key, first = next(iter(orders.items()))
    for key, order in orders.items():
        if order != first:
            raise ValueError(
                f"{run_name(*key)} lists other held-out pairs, or in another order, than {run_name(*first_key)}"
            )


def seeded_verdicts(values: dict[tuple[str, float, int], dict], seeds: list[int]) -> dict:
    """The pre-registered rule (bench/dynamics_stats.py) over the seeds' per-pair held-out values (crossed: every
    seed holds out the same pairs). Beside each bootstrap interval, reported and not judged: the Student-t interval
    over the seeds' mean differences (seed-to-seed spread alone)."""
    from dynamics_stats import JUDGED_PANELS, NOT_TESTED, learned, overall, paired_difference, verdict

    from adadpo.plotting.seeds import mean_interval

    held_out_pairs_match(values)
    cells, rows = {}, []
    for beta in sorted({beta for _, beta, _ in values}, reverse=True):
        grid = {
            (loss, panel): [values[(loss, beta, seed)][panel] for seed in seeds]  # one list per seed
            for loss in LOSSES
            for panel in values[("dpo", beta, seeds[0])]
        }
        dpo_learned = learned(grid[("dpo", "reward accuracy")], shared_pairs=True)
        for panel, direction in {**JUDGED_PANELS, "held-out rejected log-prob change per token": None}.items():
            dpo, adadpo = grid[("dpo", panel)], grid[("adadpo", panel)]
            difference = paired_difference(dpo, adadpo, shared_pairs=True)
            per_seed = [sum(a) / len(a) - sum(d) / len(d) for d, a in zip(dpo, adadpo, strict=True)]
            judged = direction is not None
            result = (verdict(difference, direction) if dpo_learned else NOT_TESTED) if judged else "reported"
            if judged:
                cells[(panel, beta)] = result
            rows.append({
                "beta": beta, "panel": panel, "direction": direction or "-", "dpo": _pooled_mean(dpo),
                "adadpo": _pooled_mean(adadpo), "difference": difference.mean, "low": difference.low,
                "high": difference.high, "per_seed_differences": per_seed,
                "seed_t_interval": list(mean_interval(per_seed)[1:]), "verdict": result, "dpo_learned": dpo_learned,
            })  # fmt: skip
    return {"rows": rows, "overall": overall(cells)}


def seeded_figures(out: Path, seeds: list[int], betas: list[float]) -> list[Path]:
    """Figure 2 and the mechanism panel, mean over seeds with 95% bands (adadpo.plotting.seeds)."""
    from adadpo.plotting.runs import load_run, save_figure
    from adadpo.plotting.seeds import plot_mechanism, plot_seeded_dynamics

    runs = [load_run(out / run_name(loss, beta, seed)) for beta in betas for loss in LOSSES for seed in seeds]
    return [
        save_figure(plot_seeded_dynamics(runs), out / "plots" / "training_dynamics_seeded.png"),
        save_figure(plot_mechanism(runs), out / "plots" / "mechanism.png"),
    ]


def mechanism_rows(out: Path, values: dict[tuple[str, float, int], dict], seeds: list[int]) -> list[dict]:
    """Per β and loss, with the final weights: the per-token log-ratio change of each side on the held-out pairs and
    on trained pairs (pooled mean, two-level bootstrap interval), and the per-token gradient balance over the last
    quarter of training steps (median over a batch; mean over seeds, Student-t interval)."""
    from dynamics_stats import interval

    from adadpo.plotting.runs import load_run
    from adadpo.plotting.seeds import TOKEN_BALANCE, last_fraction_means, mean_interval

    rows = []
    for beta in sorted({beta for _, beta, _ in values}, reverse=True):
        for loss in LOSSES:
            row = {"beta": beta, "loss": loss}
            for split in ("held-out", "trained"):
                for side in ("chosen", "rejected"):
                    change = interval([values[(loss, beta, seed)][f"{split} {side} log-prob change per token"]
                                       for seed in seeds], shared_pairs=split == "held-out")  # fmt: skip
                    row[f"{split} {side}"] = [change.mean, change.low, change.high]
            runs = [load_run(out / run_name(loss, beta, seed)) for seed in seeds]
            row["token grad balance"] = list(mean_interval(last_fraction_means(runs, TOKEN_BALANCE)))
            rows.append(row)
    return rows


def mechanism_markdown(rows: list[dict], seeds: int) -> str:
    columns = ("held-out chosen", "held-out rejected", "trained chosen", "trained rejected", "token grad balance")
    cell = lambda v: f"{v[0]:+.4f} [{v[1]:+.4f}, {v[2]:+.4f}]"  # noqa: E731
    lines = [
        f"The mechanism ({seeds} seeds): (log π − log π_ref) per token of each response with the final weights, on "
        f"the held-out pairs and on the pairs of the first {TRAINED_BATCHES} steps (bootstrap over seeds and pairs); the "
        "per-token gradient balance |∂L/∂q_w| / |∂L/∂q_l| (1 = balanced) over the last quarter of steps (t interval)",
        "",
        "| β | loss | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
        *(f"| {row['beta']:g} | {row['loss']} | " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows),
    ]
    return "\n".join(lines) + "\n"


def _pooled_mean(per_seed: list[list[float]]) -> float:
    values = [value for seed_values in per_seed for value in seed_values]
    return sum(values) / len(values)


def seeded_markdown(verdicts: dict, seeds: list[int], pairs: int) -> str:
    lines = [
        f"{len(seeds)} seeds, the same {pairs} held-out pairs for each; AdaDPO − DPO with its 95% bootstrap interval "
        "(seeds and pairs, crossed; judged) and the 95% t interval over the seeds' mean differences (not judged)",
        "",
        "| β | panel (paper: AdaDPO …) | DPO | AdaDPO | AdaDPO − DPO [95% bootstrap] | per seed [t interval] | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in verdicts["rows"]:
        seeds_text = ", ".join(f"{d:+.4f}" for d in row["per_seed_differences"])
        low, high = row["seed_t_interval"]
        lines.append(
            f"| {row['beta']:g} | {row['panel']} ({row['direction']}) | {row['dpo']:.4f} | {row['adadpo']:.4f} | "
            f"{row['difference']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}] | {seeds_text} "
            f"[{low:+.4f}, {high:+.4f}] | {row['verdict']} |"
        )
    return "\n".join([*lines, "", f"Overall: **{verdicts['overall']}**"]) + "\n"


def history(run_dir: Path) -> list[dict]:
    return json.loads(RunFolder(run_dir).trainer_state.read_text())["log_history"]


def final_eval(run_dir: Path) -> dict:
    evals = [entry for entry in history(run_dir) if "eval_loss" in entry]
    if not evals:
        raise ValueError(f"{run_dir} logged no evaluation; is the eval split empty?")
    return evals[-1]


def coefficient_stats(run_dir: Path, beta: float) -> dict:
    """beta_w / beta over the training steps: its range, the spread within the last logged batch, and the share of
    clipped pairs over all steps and over the last quarter (where the policy is furthest from the reference)."""
    train = [entry for entry in history(run_dir) if "adadpo/beta_w_mean" in entry and "eval_loss" not in entry]
    if not train:
        return {}
    last_quarter = train[-max(1, len(train) // 4) :]
    clip = [entry.get("adadpo/clip_fraction", 0.0) for entry in train]
    clip_late = [entry.get("adadpo/clip_fraction", 0.0) for entry in last_quarter]
    return {
        "beta_w_over_beta_min": min(entry["adadpo/beta_w_min"] for entry in train) / beta,
        "beta_w_over_beta_max": max(entry["adadpo/beta_w_max"] for entry in train) / beta,
        "beta_w_over_beta_mean_first_step": train[0]["adadpo/beta_w_mean"] / beta,
        "beta_w_over_beta_mean_last_quarter": sum(e["adadpo/beta_w_mean"] for e in last_quarter)
        / len(last_quarter)
        / beta,
        "clip_fraction_mean": sum(clip) / len(clip),
        "clip_fraction_last_quarter": sum(clip_late) / len(clip_late),
        "token_grad_balance_median_last_quarter": _mean(last_quarter, "adadpo/token_grad_balance_median"),
    }


def _mean(entries: list[dict], key: str) -> float | None:
    values = [entry[key] for entry in entries if isinstance(entry.get(key), int | float)]
    return sum(values) / len(values) if values else None


def verdicts(finals: dict[tuple[str, float], dict]) -> list[dict]:
    """Per beta and metric: DPO's and AdaDPO's final held-out value and whether the paper's direction holds."""
    rows = []
    for beta in BETAS:
        for key, title, better in PANELS:
            dpo, ada = finals[("dpo", beta)].get(key), finals[("adadpo", beta)].get(key)
            holds = None if dpo is None or ada is None else (ada < dpo if better == "lower" else ada > dpo)
            tie = dpo is not None and dpo == ada
            rows.append(
                {
                    "beta": beta,
                    "metric": title,
                    "key": key,
                    "better": better,
                    "dpo": dpo,
                    "adadpo": ada,
                    "paper_direction_holds": holds,
                    "tie": tie,
                }
            )
    return rows


def markdown(rows: list[dict], coefficients: dict[float, dict]) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        "| β | metric (paper: AdaDPO …) | DPO | AdaDPO | AdaDPO − DPO | paper's direction holds? |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        diff = None if row["dpo"] is None or row["adadpo"] is None else row["adadpo"] - row["dpo"]
        holds = {True: "yes", False: "**no**", None: "-"}[row["paper_direction_holds"]]
        holds = "**no** (tie)" if row["tie"] else holds
        lines.append(
            f"| {row['beta']:g} | {row['metric']} ({row['better']}) | {fmt(row['dpo'])} | "
            f"{fmt(row['adadpo'])} | {'-' if diff is None else f'{diff:+.3f}'} | {holds} |"
        )
    lines += [
        "",
        "| β | β_w/β range over training | β_w/β mean, first step → last quarter | clipped pairs: all steps / "
        "last quarter | per-token grad balance (median, last quarter) |",
        "|---|---|---|---|---|",
    ]
    for beta, stats in coefficients.items():
        if stats:
            lines.append(
                f"| {beta:g} | {stats['beta_w_over_beta_min']:.2f}–{stats['beta_w_over_beta_max']:.2f} | "
                f"{stats['beta_w_over_beta_mean_first_step']:.3f} → {stats['beta_w_over_beta_mean_last_quarter']:.3f} | "
                f"{100 * stats['clip_fraction_mean']:.1f}% / {100 * stats['clip_fraction_last_quarter']:.1f}% | "
                f"{fmt(stats['token_grad_balance_median_last_quarter'])} |"
            )
    return "\n".join(lines) + "\n"


def prepare_model(quick: bool, cache: Path) -> Path:
    if quick:
        from adadpo.testing import save_tiny_model

        target = cache / "tiny-llama"
        return target if (target / "config.json").exists() else save_tiny_model(target)
    from adadpo.demo import prepare_smollm2

    return prepare_smollm2(ROOT / ".cache" / "smollm2-135m-instruct")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny random model and sizes: a pipeline check")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dynamics")
    parser.add_argument("--hh_rlhf", type=Path, default=HH_RLHF, help="HH-RLHF jsonl(.gz) to draw pairs from")
    parser.add_argument("--dataset", help="use this preference dataset (any run_adadpo.py dataset_name) as given")
    parser.add_argument("--max_steps", type=int, help="optimizer steps per run (default: the size's)")
    parser.add_argument("--train_pairs", type=int, help="pairs drawn for training (default: the size's)")
    parser.add_argument("--eval_pairs", type=int, help="held-out pairs (the seeded rule asks for at least 300)")
    parser.add_argument("--learning_rate", type=float, help="one rate for every run (default: the size's)")
    parser.add_argument("--eval_steps", type=int, help="steps between held-out evaluations (default: the size's)")
    parser.add_argument("--max_tokens", type=int, help="tokens per side of a drawn pair (default: the size's)")
    parser.add_argument("--multi_turn", action="store_true", help="draw multi-turn pairs too (default: single-turn)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="seeded runs (data order and held-out split per seed), judged by the "
        "pre-registered rule on per-pair held-out values (docs/evaluation.md); default: one run per loss and β"
    )  # fmt: skip
    parser.add_argument(
        "--betas", type=float, nargs="+", help=f"seeded runs: these β (default {BETAS}; the pilot: the first)"
    )
    parser.add_argument(
        "--pilot_learning_rates", type=float, nargs="+", help="instead of the runs: the pilot, DPO at each rate on the "
        "seeded runs' training split only, which picks their rate and step count (docs/evaluation.md)"
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.betas and not (args.seeds or args.pilot_learning_rates):
        parser.error("--betas applies to the seeded runs and the pilot (--seeds, --pilot_learning_rates)")
    args.betas = args.betas or list(BETAS)
    mode = "quick" if args.quick else "full"
    size = dict(SIZES[mode])
    for key in ("max_steps", "train_pairs", "eval_pairs", "learning_rate", "eval_steps", "max_tokens"):
        if getattr(args, key):
            size[key] = getattr(args, key)
    out = args.out / mode
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    model_dir = prepare_model(args.quick, out)
    if args.dataset:
        data = args.dataset
    else:
        data, drawn = out / "pairs.jsonl", out / "pairs.settings.json"
        wanted = size["train_pairs"] + size["eval_pairs"]
        settings = {"pairs": wanted, "max_tokens": size["max_tokens"], "multi_turn": args.multi_turn}
        if data.exists() and (not drawn.exists() or json.loads(drawn.read_text()) != settings):
            raise ValueError(f"{data} holds pairs drawn with other settings than {settings}; use another --out.")
        if not data.exists():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            pairs = single_turn_pairs(args.hh_rlhf, tokenizer, size["max_tokens"], wanted, 0, args.multi_turn)
            write_jsonl_atomic(data, pairs)
            write_text_atomic(drawn, json.dumps(settings))

    if args.pilot_learning_rates:
        return pilot_main(args, size, out, model_dir, Path(data), start)
    if args.seeds:
        return seeded_main(args, size, out, model_dir, Path(data), start)
    runs, seconds = {}, {}
    for beta in BETAS:
        for loss in LOSSES:
            t0 = time.time()
            runs[(loss, beta)] = run_training(loss, beta, Path(data), model_dir, out, size)
            seconds[f"{loss}-beta{beta:g}"] = time.time() - t0
    trained = time.time()

    from adadpo.cli import plot_runs

    figures = plot_runs.main([*map(str, runs.values()), "--out", str(out / "plots")])
    finals = {key: final_eval(run_dir) for key, run_dir in runs.items()}
    rows = verdicts(finals)
    coefficients = {beta: coefficient_stats(runs[("adadpo", beta)], beta) for beta in BETAS}
    table = markdown(rows, coefficients)
    steps = finals[("dpo", BETAS[0])]["step"]
    result = {
        "mode": mode,
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/dynamics.py"
        + (" --quick" if args.quick else "")
        + (f" --max_steps {args.max_steps}" if args.max_steps else ""),
        "model": str(model_dir),
        "data": str(data) if args.dataset else f"{args.hh_rlhf.name}: single-turn pairs (seed 0)",
        "sizes": size,
        "train_settings": TRAIN_SETTINGS,
        "optimizer_steps": steps,
        "final": {f"{loss}-beta{beta:g}": final for (loss, beta), final in finals.items()},
        "comparison": rows,
        "adadpo_coefficient": {f"{beta:g}": stats for beta, stats in coefficients.items()},
        "figures": [str(path.relative_to(out)) for path in figures],
        "wall_seconds": {"runs": seconds, "train": trained - start, "total": time.time() - start},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    (out / "dynamics.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "dynamics.md").write_text(table)
    print(
        f"\n{table}\n{steps} optimizer steps per run, {result['wall_seconds']['total'] / 60:.1f} min. "
        f"Written to {out}/dynamics.json and {out}/plots/"
    )
    return result


def training_split(data: Path, eval_pairs: int) -> list[dict]:
    """The pairs the seeded runs may train on: the train side of their held-out split, drawn by the project's own
    loader (the same call the runs make), so a pilot on them never sees a held-out pair."""
    from types import SimpleNamespace

    from adadpo.data import load_raw_datasets

    recipe = SimpleNamespace(dataset_mixture=held_out_mixture(data, eval_pairs), test_split_size=None)
    return load_raw_datasets(recipe)["train"].to_list()


def pilot_main(args, size: dict, out: Path, model_dir: Path, data: Path, start: float) -> dict:
    """DPO at the first β and each `--pilot_learning_rates`, trained on the seeded runs' training split less
    `pilot_eval_pairs` and evaluated on those every `eval_steps`. The rule (docs/evaluation.md): the seeded runs take
    the rate and step count with the highest pilot-validation reward accuracy (ties: fewer steps, then the lower
    rate)."""
    pilot = out / "pilot"
    pairs, pilot_data = training_split(data, size["eval_pairs"]), pilot / "pairs.jsonl"
    if pilot_data.exists() and [json.loads(line) for line in pilot_data.read_text().splitlines()] != pairs:
        raise ValueError(f"{pilot_data} holds another training split than these settings draw; use another --out.")
    write_jsonl_atomic(pilot_data, pairs)
    beta, curves, seconds, validate = args.betas[0], {}, {}, size["pilot_eval_pairs"]
    run_dirs = []
    for rate in args.pilot_learning_rates:
        t0 = time.time()
        pilot_size = {
            **size, "train_pairs": len(pairs) - validate, "eval_pairs": validate, "learning_rate": rate
        }  # fmt: skip
        name = f"{run_name('dpo', beta, None)}-lr{rate:g}"
        run_dir = run_training("dpo", beta, pilot_data, model_dir, pilot, pilot_size, name=name)
        run_dirs.append(run_dir)
        evaluations = {}  # by step: a final evaluation repeating the last scheduled one is not a new point
        for e in history(run_dir):
            if "eval_loss" in e:
                evaluations.setdefault(e["step"], e)
        curves[rate] = [
            {"step": step, "reward accuracy": e["eval_rewards/accuracies"], "eval loss": e["eval_loss"]}
            for step, e in evaluations.items()
        ]
        seconds[name] = time.time() - t0
    best_rate, best = max(
        ((rate, point) for rate, points in curves.items() for point in points),
        key=lambda item: (item[1]["reward accuracy"], -item[1]["step"], -item[0]),  # ties: fewer steps, lower rate
    )
    lines = [
        f"Pilot: DPO, β {beta:g}, {len(pairs) - validate} training-split pairs to train, {validate} "
        "other training-split pairs to validate (no held-out pair)",
        "",
        "| learning rate | step | pilot-validation reward accuracy | pilot-validation loss |",
        "|---|---|---|---|",
        *(
            f"| {rate:g} | {p['step']} | {p['reward accuracy']:.3f} | {p['eval loss']:.4f} |"
            for rate, points in curves.items()
            for p in points
        ),
        "",
        f"Chosen by the rule: learning rate **{best_rate:g}**, **{best['step']}** steps.",
    ]
    table = "\n".join(lines) + "\n"
    result = {
        "learning_rate": best_rate, "max_steps": best["step"], "curves": {f"{r:g}": c for r, c in curves.items()},
        "sizes": size, "train_settings": TRAIN_SETTINGS, "wall_seconds": {"runs": seconds, "total": time.time() - start},
    }  # fmt: skip
    from adadpo.cli import plot_runs

    plot_runs.main([*map(str, run_dirs), "--out", str(pilot / "plots")])
    write_text_atomic(pilot / "pilot.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(pilot / "pilot.md", table)
    print(f"\n{table}\nWritten to {pilot}/pilot.json")
    return result


def seeded_main(args, size: dict, out: Path, model_dir: Path, data: Path, start: float) -> dict:
    """Every (seed, β, loss) run, then per-pair held-out values of each, then the pre-registered verdicts."""
    seeds, values, seconds = list(args.seeds), {}, {}
    if size["max_steps"] % size["eval_steps"]:
        raise ValueError(
            f"--max_steps {size['max_steps']} is not a multiple of --eval_steps {size['eval_steps']}: the seeded runs' "
            "last scheduled evaluation must be of the final weights (the judged values)."
        )
    for beta in args.betas:  # β by β: a β's seeds are complete before the next β starts
        for seed in seeds:
            for loss in LOSSES:
                t0 = time.time()
                run_dir = run_training(loss, beta, data, model_dir, out, size, seed=seed)
                values[(loss, beta, seed)] = cached_held_out_values(run_dir, SweepFolder(out).recipe(run_dir.name))
                seconds[run_dir.name] = time.time() - t0
    verdicts = seeded_verdicts(values, seeds)
    mechanism = mechanism_rows(out, values, seeds)
    held_out = len(next(iter(values.values()))["eval loss"])  # after the data checks
    table = seeded_markdown(verdicts, seeds, held_out) + "\n" + mechanism_markdown(mechanism, len(seeds))
    figures = seeded_figures(out, seeds, args.betas)
    result = {
        "mode": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%d"),
        "seeds": seeds,
        "sizes": size,
        "train_settings": TRAIN_SETTINGS,
        "verdicts": verdicts,
        "mechanism": mechanism,
        "figures": [str(path.relative_to(out)) for path in figures],
        "held_out_values": {f"{loss}-beta{beta:g}-seed{seed}": v for (loss, beta, seed), v in values.items()},
        "wall_seconds": {"runs": seconds, "total": time.time() - start},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    (out / "dynamics_seeded.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "dynamics_seeded.md").write_text(table)
    print(f"\n{table}\n{result['wall_seconds']['total'] / 60:.1f} min. Written to {out}/dynamics_seeded.json")
    return result


if __name__ == "__main__":
    try:
        main()
    except ValueError as error:  # stale runs or pairs, too few pairs in the data: the message says what to do
        sys.exit(f"error: {error}")
