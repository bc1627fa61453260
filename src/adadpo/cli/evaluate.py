r"""Evaluate one or several models side by side on a prompt set.

    python scripts/evaluate.py --model_name_or_paths base/ dpo/ adadpo/ --model_names base dpo adadpo \
        --prompts ifeval:all --ifeval_data ../shared/data/ifeval_input_data.jsonl --output_dir outputs/eval

On IFEval prompts (`ifeval:all` = the 541 of google/IFEval, or one half of the fixed split, or any rows in IFEval's
format) it reports IFEval's four numbers, prompt-level and instruction-level accuracy, strict and loose, from
lm-eval's checkers (`adadpo.evaluation.ifeval`; prompts whose checkers cannot run here are counted and left out, with
the reason), and each model's wins / losses / ties against the base model (the first model unless `base_model` says
otherwise) under the per-prompt share of instructions followed, with a sign test; for any prompt set it reports the
mean response length in tokens. It prints a markdown table and writes, under `output_dir`:
    results.json, results.md                        the numbers
    answers.jsonl                                   every prompt with each model's response (and IFEval score)
    alpaca_eval/<name>/model_outputs.json           AlpacaEval 2 model outputs
    arena-hard/model_answer/<name>.jsonl            Arena-Hard answers
Greedy decoding by default (temperature 0), so results are deterministic.
"""

import json
import logging
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trl import TrlParser

from adadpo.evaluation.arguments import GenerationArguments
from adadpo.evaluation.ifeval import METRICS, prompt_scores, score_ifeval, unscorable
from adadpo.evaluation.stats import pairwise_win_rate, win_loss_tie
from adadpo.files import write_jsonl_atomic, write_text_atomic


logger = logging.getLogger("evaluate")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class EvaluateArguments(GenerationArguments):
    """Prompt source and sampling from `GenerationArguments` (greedy by default), plus the models to compare."""

    model_name_or_paths: list[str] = field(default_factory=list, metadata={"help": "Models to compare (paths/ids)."})
    model_names: list[str] | None = field(default=None, metadata={"help": "Display names, one per model."})
    base_model: str | None = field(default=None, metadata={"help": "Name of the baseline; default: the first."})
    output_dir: str = "outputs/eval"

    def __post_init__(self):
        if not self.model_name_or_paths:
            raise ValueError("Set `model_name_or_paths` (one or more models to evaluate).")
        if self.model_names is None:
            self.model_names = [Path(p.rstrip("/")).name for p in self.model_name_or_paths]
        if len(self.model_names) != len(self.model_name_or_paths):
            raise ValueError(
                f"Give one name per model: {len(self.model_names)} names for {len(self.model_name_or_paths)} models."
            )
        if len(set(self.model_names)) != len(self.model_names):
            raise ValueError(f"Model names must be unique, got {self.model_names}; set `model_names`.")
        bad = [n for n in self.model_names if not NAME_RE.match(n)]
        if bad:
            raise ValueError(f"Model names {bad} are used as file names: use letters, digits, '.', '_' or '-'.")
        self.base_model = self.base_model or self.model_names[0]
        if self.base_model not in self.model_names:
            raise ValueError(f"`base_model` {self.base_model!r} is not one of the model names {self.model_names}.")
        super().__post_init__()


def alpaca_eval_outputs(prompts, responses, generator: str) -> list[dict]:
    """AlpacaEval's model_outputs.json rows: instruction, output, generator (+ dataset when the prompts carry it)."""
    rows = []
    for prompt, response in zip(prompts, responses, strict=True):
        row = {"instruction": prompt["prompt"], "output": response, "generator": generator}
        if "dataset" in prompt:
            row["dataset"] = prompt["dataset"]
        rows.append(row)
    return rows


def arena_hard_answers(prompts, responses, num_tokens, model_id: str) -> list[dict]:
    """Arena-Hard answer rows. `token_len` counts the evaluated model's own tokens (Arena-Hard's reference scripts
    use a tiktoken encoding); `answer_id` is a stable UUID of (model, question), so reruns produce the same ids."""
    now = time.time()
    return [
        {
            "question_id": prompt["id"],
            "answer_id": uuid.uuid5(uuid.NAMESPACE_URL, f"adadpo/{model_id}/{prompt['id']}").hex,
            "model_id": model_id,
            "choices": [{"index": 0, "turns": [{"content": response, "token_len": length}]}],
            "tstamp": now,
        }
        for prompt, response, length in zip(prompts, responses, num_tokens, strict=True)
    ]


IFEVAL_LABELS = {  # by metric, so the columns follow METRICS' order whatever it is
    "prompt_level_strict_acc": "prompt-level strict",
    "inst_level_strict_acc": "instruction-level strict",
    "prompt_level_loose_acc": "prompt-level loose",
    "inst_level_loose_acc": "instruction-level loose",
}


def markdown_table(results: list[dict], base: str, verifiable: bool) -> str:
    header = ["model", "mean length (tokens)"]
    if verifiable:
        header = [
            "model",
            *(IFEVAL_LABELS[m] for m in METRICS),
            f"win rate vs {base}",
            "W / L / T (sign-test p)",
            "mean length (tokens)",
        ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [r["name"]]
        if verifiable:
            win, record = "(base)", "-"
            if r["name"] != base:
                win = f"{100 * r['win_rate_vs_base']:.1f}%"
                record = f"{r['wins_vs_base']} / {r['losses_vs_base']} / {r['ties_vs_base']} ({r['sign_test_p_vs_base']:.2f})"
            cells += [f"{100 * r['ifeval'][metric]:.1f}%" for metric in METRICS] + [win, record]
        cells.append(f"{r['mean_response_tokens']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    (args,) = TrlParser([EvaluateArguments]).parse_args_and_config(argv)
    prompts = args.load_prompts()
    verifiable = all("ifeval" in p for p in prompts)
    if not verifiable:
        logger.info("Some prompts have no IFEval instructions: reporting mean length only (no accuracy or win rate).")
    skip = unscorable([p["ifeval"] for p in prompts]) if verifiable else {}
    outputs = {}
    for name, path in zip(args.model_names, args.model_name_or_paths, strict=True):
        logger.info("Generating answers with %s (%s)", name, path)
        outputs[name] = args.generate(path, prompts)
    responses = {name: [t[0] for t in g.texts] for name, g in outputs.items()}
    lengths = {name: [n[0] for n in g.num_tokens] for name, g in outputs.items()}
    results, scores = [], {}
    for name, path in zip(args.model_names, args.model_name_or_paths, strict=True):
        entry = {"name": name, "model_name_or_path": path}
        entry["mean_response_tokens"] = sum(lengths[name]) / len(prompts)
        if verifiable:
            ifeval = score_ifeval([p["ifeval"] for p in prompts], responses[name], skip)
            scores[name] = prompt_scores(ifeval.pop("per_prompt"))
            entry["ifeval"] = ifeval
        results.append(entry)
    if verifiable:
        scored = [i for i, s in enumerate(scores[args.base_model]) if s is not None]  # the same prompts for all
        for entry in results:
            ours, base = ([scores[n][i] for i in scored] for n in (entry["name"], args.base_model))
            entry["win_rate_vs_base"] = pairwise_win_rate(ours, base)
            entry |= {f"{key}_vs_base": value for key, value in win_loss_tie(ours, base).items()}

    out = Path(args.output_dir)
    table = markdown_table(results, args.base_model, verifiable)
    summary = {"prompts": args.prompts, "num_prompts": len(prompts), "base_model": args.base_model}
    if verifiable:
        first = results[0]["ifeval"]
        summary |= {k: first[k] for k in ("num_scored", "num_unscored", "unscored_reason")}
        summary["ifeval_data"] = args.ifeval_data
        if first["unscored_reason"]:
            table += f"\nIFEval: {first['num_scored']} of {len(prompts)} prompts scored; {first['unscored_reason']}\n"
    summary |= {"sampling": asdict(args.sampling_config()), "models": results}
    write_text_atomic(out / "results.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomic(out / "results.md", table)
    answers = []
    for i, prompt in enumerate(prompts):
        row = {"id": prompt["id"], "prompt": prompt["prompt"], "responses": {n: responses[n][i] for n in responses}}
        if verifiable:
            row["scores"] = {n: scores[n][i] for n in scores}
        answers.append(row)
    write_jsonl_atomic(out / "answers.jsonl", answers)
    for name in args.model_names:
        alpaca = alpaca_eval_outputs(prompts, responses[name], name)
        write_text_atomic(out / "alpaca_eval" / name / "model_outputs.json", json.dumps(alpaca, indent=2) + "\n")
        arena = arena_hard_answers(prompts, responses[name], lengths[name], name)
        write_jsonl_atomic(out / "arena-hard" / "model_answer" / f"{name}.jsonl", arena)
    print(table)
    logger.info("Wrote results, answers and AlpacaEval / Arena-Hard files under %s", out)
    return summary


def cli() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main()
    return 0
