r"""On-policy preference pairs: sample `num_samples` responses per prompt from a model, score each with a scorer
(IFEval's checkers via lm-eval, or a reward model), keep the best as `chosen` and the worst as `rejected`, and write a TRL
conversational preference dataset (.jsonl or .parquet, optionally pushed to the Hub).

    python scripts/generate_preferences.py --config recipes/smollm2-135m-instruct/generate/config_cpu.yaml
    python scripts/generate_preferences.py --model_name_or_path my/sft-model --scorer reward_model \
        --reward_model_name_or_path RLHFlow/ArmoRM-Llama3-8B-v0.1 --trust_remote_code --output_path data/prefs.jsonl

Prompts whose best and worst samples score the same are dropped (counted in the log): see `adadpo.evaluation.scoring.select_pair`.
"""

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trl import TrlParser

from adadpo.evaluation.arguments import GenerationArguments, redefault
from adadpo.evaluation.scoring import build_scorer, scorable_prompts, select_pair
from adadpo.files import write_atomic, write_jsonl_atomic


logger = logging.getLogger("generate_preferences")
SCORERS = ("ifeval", "reward_model")
OUTPUT_SUFFIXES = (".jsonl", ".parquet")


@dataclass
class GeneratePreferencesArguments(GenerationArguments):
    """Prompt source and sampling from `GenerationArguments`, with sampling defaults (several responses per prompt
    at a temperature), plus the policy, the scorer and where the pairs go."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "Policy to sample from (path or Hub id)."})
    prompts: str = redefault("prompts", "ifeval:train")
    num_samples: int = field(default=4, metadata={"help": "Responses sampled per prompt (>= 2)."})
    seed: int = redefault("seed", 42)
    temperature: float = redefault("temperature", 0.8)
    top_p: float = redefault("top_p", 0.95)
    trust_remote_code: bool = field(default=False, metadata={"help": "Needed for ArmoRM's custom reward head."})
    scorer: str = field(default="ifeval", metadata={"help": f"One of {SCORERS}."})
    reward_model_name_or_path: str | None = None
    reward_model_batch_size: int = 8
    reward_model_max_length: int | None = None
    output_path: str = field(default="outputs/preferences.jsonl", metadata={"help": "A .jsonl or .parquet file."})
    push_to_hub: bool = False
    hub_dataset_id: str | None = None
    hub_private_repo: bool = False

    def __post_init__(self):
        if not self.model_name_or_path:
            raise ValueError(
                "Set `model_name_or_path` (the policy to sample from) in the recipe or on the command line."
            )
        if self.scorer not in SCORERS:
            raise ValueError(f"Unknown scorer {self.scorer!r}; use one of {SCORERS}.")
        if self.scorer == "reward_model" and not self.reward_model_name_or_path:
            raise ValueError("scorer 'reward_model' needs `reward_model_name_or_path`.")
        if self.num_samples < 2:
            raise ValueError(f"`num_samples` must be >= 2 to form a pair, got {self.num_samples}.")
        if self.reward_model_batch_size < 1:
            raise ValueError("`reward_model_batch_size` must be >= 1.")
        if Path(self.output_path).suffix not in OUTPUT_SUFFIXES:
            raise ValueError(f"`output_path` must end in one of {OUTPUT_SUFFIXES}, got {self.output_path!r}.")
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("`push_to_hub` needs `hub_dataset_id` (e.g. your-name/my-preferences).")
        super().__post_init__()

    @property
    def samples_per_prompt(self) -> int:
        return self.num_samples


def build_pairs(prompts, generations, scores) -> tuple[list[dict], int]:
    """TRL conversational preference rows from per-prompt samples and scores; returns (rows, number of ties)."""
    rows, ties = [], 0
    for prompt, texts, lengths, sample_scores in zip(
        prompts, generations.texts, generations.num_tokens, scores, strict=True
    ):
        pair = select_pair(sample_scores, lengths)
        if pair is None:
            ties += 1
            continue
        chosen, rejected = pair
        rows.append(
            {
                "prompt_id": prompt["id"],
                "prompt": [{"role": "user", "content": prompt["prompt"]}],
                "chosen": [{"role": "assistant", "content": texts[chosen]}],
                "rejected": [{"role": "assistant", "content": texts[rejected]}],
                "score_chosen": float(sample_scores[chosen]),
                "score_rejected": float(sample_scores[rejected]),
                "reward_margin": float(sample_scores[chosen] - sample_scores[rejected]),
            }
        )
    return rows, ties


def write_rows_atomically(rows: list[dict], path: Path) -> None:
    """Readers never see a half-written dataset (`adadpo.files.write_atomic`)."""
    if path.suffix == ".parquet":
        import datasets

        write_atomic(path, lambda f: datasets.Dataset.from_list(rows).to_parquet(f), binary=True)
    else:
        write_jsonl_atomic(path, rows)


def main(argv: list[str] | None = None) -> dict:
    (args,) = TrlParser([GeneratePreferencesArguments]).parse_args_and_config(argv)
    prompts = args.load_prompts(require_ifeval=args.scorer == "ifeval")
    if args.scorer == "ifeval":  # a prompt whose checkers cannot run here cannot rank its samples: not sampled
        prompts, dropped = scorable_prompts(prompts)
        if dropped:
            logger.warning("%s Those prompts are not sampled.", dropped)
        if not prompts:
            raise ValueError("No prompt can be scored with IFEval's checkers here; see the warning above.")
    if args.scorer == "reward_model":  # fail on a wrong reward model path now, not after an hour of sampling
        from transformers import AutoConfig

        AutoConfig.from_pretrained(args.reward_model_name_or_path, trust_remote_code=args.trust_remote_code)
    logger.info(
        "Sampling %d responses for each of %d prompts from %s", args.num_samples, len(prompts), args.model_name_or_path
    )
    generations = args.generate(args.model_name_or_path, prompts)
    scorer = build_scorer(
        args.scorer,
        args.reward_model_name_or_path,
        args.reward_model_batch_size,
        args.trust_remote_code,
        args.reward_model_max_length,
    )
    flat_prompts = [p for p in prompts for _ in range(args.num_samples)]
    flat_scores = scorer.score(flat_prompts, [t for texts in generations.texts for t in texts])
    scores = [flat_scores[i : i + args.num_samples] for i in range(0, len(flat_scores), args.num_samples)]
    rows, ties = build_pairs(prompts, generations, scores)
    logger.info(
        "Kept %d pairs; dropped %d of %d prompts whose samples all scored the same.", len(rows), ties, len(prompts)
    )
    if not rows:
        raise RuntimeError(
            f"All {len(prompts)} prompts tied (best score == worst score), so there is no pair to write. "
            "Raise `num_samples` or `temperature`, or use more prompts."
        )
    output_path = Path(args.output_path)
    write_rows_atomically(rows, output_path)
    logger.info("Wrote %d preference pairs to %s", len(rows), output_path)
    if args.push_to_hub:
        import datasets

        datasets.Dataset.from_list(rows).push_to_hub(args.hub_dataset_id, private=args.hub_private_repo)
        logger.info("Pushed the dataset to the Hub as %s", args.hub_dataset_id)
    return {"output_path": str(output_path), "num_pairs": len(rows), "num_ties": ties, "args": asdict(args)}


def cli() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main()
    return 0
