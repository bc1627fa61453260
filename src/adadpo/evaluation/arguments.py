"""The arguments `scripts/evaluate.py` and `scripts/generate_preferences.py` share: where the prompts come from and how
responses are sampled. Each script's dataclass subclasses `GenerationArguments` and redeclares only the defaults it
changes (the generator samples several responses at a temperature; the evaluation is greedy)."""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from adadpo.evaluation.generation import BACKENDS, Generations, SamplingConfig, generate
from adadpo.evaluation.ifeval import IFEVAL_HUB_ID
from adadpo.evaluation.prompts import load_prompts


@dataclass
class GenerationArguments:
    prompts: str = field(
        default="ifeval:all",
        metadata={
            "help": "`ifeval:all|train|heldout` (IFEval's prompts; train = the half never used for evaluation), a "
            ".jsonl/.json/.parquet file, or a Hub dataset id, with a `prompt` column."
        },
    )
    ifeval_data: str = field(
        default=IFEVAL_HUB_ID,
        metadata={"help": "Where `ifeval:` prompts come from: google/IFEval or a local copy (its .jsonl)."},
    )
    prompt_column: str | None = field(default=None, metadata={"help": "Defaults to prompt / instruction / turns."})
    hub_split: str = field(default="train", metadata={"help": "Split to read when `prompts` is a Hub dataset."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use only the first N prompts."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy (deterministic)."})
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    batch_size: int = field(default=8, metadata={"help": "Prompts per `generate` call."})
    backend: str = field(default="auto", metadata={"help": f"One of {BACKENDS}; auto = vLLM if installed with a GPU."})
    dtype: str = field(default="auto", metadata={"help": "auto = bfloat16 on GPU, float32 on CPU."})
    trust_remote_code: bool = False

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"Unknown backend {self.backend!r}; use one of {BACKENDS}.")
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {self.batch_size}.")
        self.sampling_config()  # validates temperature / top_p / max_new_tokens now, before anything is loaded

    @property
    def samples_per_prompt(self) -> int:
        return 1

    def sampling_config(self) -> SamplingConfig:
        return SamplingConfig(self.samples_per_prompt, self.temperature, self.top_p, self.max_new_tokens, self.seed)

    def load_prompts(self, require_ifeval: bool = False) -> list[dict[str, Any]]:
        return load_prompts(
            self.prompts,
            prompt_column=self.prompt_column,
            hub_split=self.hub_split,
            ifeval_data=self.ifeval_data,
            require_ifeval=require_ifeval,
            max_prompts=self.max_prompts,
        )

    def generate(self, model_name_or_path: str, prompts: list[dict[str, Any]]) -> Generations:
        return generate(
            model_name_or_path,
            [p["prompt"] for p in prompts],
            self.sampling_config(),
            batch_size=self.batch_size,
            backend=self.backend,
            dtype=self.dtype,
            trust_remote_code=self.trust_remote_code,
        )


def redefault(name: str, default: Any) -> dataclasses.Field:
    """`GenerationArguments.<name>` with another default and the same help text, for a script's subclass."""
    base = {f.name: f for f in dataclasses.fields(GenerationArguments)}[name]
    return field(default=default, metadata=base.metadata)
