"""Scorers: one small interface for ranking sampled responses, plus best-vs-worst pair selection.

- `IFEvalScorer`: the fraction of a prompt's IFEval instructions that a response follows (strict), checked by
  lm-eval's IFEval checkers (`adadpo.evaluation.ifeval`).
- `RewardModelScorer`: an `AutoModelForSequenceClassification` reward model applied to the chat-templated
  (prompt, response) conversation. Models whose output carries a `.score` field (ArmoRM, RLHFlow/
  ArmoRM-Llama3-8B-v0.1, whose custom head mixes 19 objective rewards with a prompt-conditioned gating network and
  returns the preference score as `output.score`) are read from that field; plain reward models by logit 0.
"""

from typing import Any, Protocol

import torch
from transformers import AutoModelForSequenceClassification

from adadpo.evaluation.generation import load_pretrained
from adadpo.evaluation.ifeval import describe_unscored, prompt_scores, score_ifeval, unscorable


class Scorer(Protocol):
    def score(self, prompts: list[dict[str, Any]], responses: list[str]) -> list[float]:
        """One score per (prompt, response) pair, higher is better. `prompts[i]` is a prompt dict
        (`{"prompt": str, "constraints"?: [...]}`) and `responses[i]` the response to it."""
        ...


def _check_lengths(prompts: list, responses: list) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"Got {len(prompts)} prompts but {len(responses)} responses; pass one prompt per response.")


class IFEvalScorer:
    """Score = fraction of the prompt's IFEval instructions followed (strict), in [0, 1]. A prompt whose checkers
    cannot run here (NLTK's punkt missing) cannot be ranked: drop it before sampling (`scorable_prompts`)."""

    def score(self, prompts: list[dict[str, Any]], responses: list[str]) -> list[float]:
        _check_lengths(prompts, responses)
        for prompt in prompts:
            if not prompt.get("ifeval"):
                raise ValueError(
                    f"Prompt {prompt.get('id', '?')!r} has no IFEval instructions; the ifeval scorer needs them. "
                    "Use `prompts: ifeval:train` (or rows in IFEval's format) or the reward-model scorer."
                )
        rows = [p["ifeval"] for p in prompts]
        scores = prompt_scores(score_ifeval(rows, responses)["per_prompt"])
        if any(s is None for s in scores):
            raise ValueError(
                "Some prompts cannot be scored here (NLTK's punkt missing): drop them with scorable_prompts."
            )
        return scores


def scorable_prompts(prompts: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str | None]:
    """The prompts every IFEval checker of which runs here, and why the others were dropped (None if none was)."""
    skip = unscorable([p["ifeval"] for p in prompts])
    return [p for p in prompts if p["ifeval"]["key"] not in skip], describe_unscored(skip)


class RewardModelScorer:
    """Reward model over `[{"role": "user", ...}, {"role": "assistant", ...}]`, batched with right padding
    (ArmoRM's custom head finds the last token as "first pad - 1"; transformers' own heads accept either side)."""

    def __init__(self, model, tokenizer, batch_size: int = 8, max_length: int | None = None):
        if not tokenizer.chat_template:
            raise ValueError(
                f"The reward model tokenizer {tokenizer.name_or_path!r} has no chat template, so prompt and response "
                "cannot be put into the conversation it was trained on. Add a `chat_template` to its "
                "tokenizer_config.json or pick a chat reward model."
            )
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        self.model = model.eval()
        self.tokenizer = tokenizer
        # Without a pad token a batch cannot be padded; score one conversation at a time instead.
        self.batch_size = batch_size if tokenizer.pad_token_id is not None else 1
        self.max_length = max_length

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str,
        batch_size: int = 8,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        max_length: int | None = None,
    ) -> "RewardModelScorer":
        """ArmoRM needs `trust_remote_code=True` (its head is custom code in the model repository)."""

        model, tokenizer = load_pretrained(
            AutoModelForSequenceClassification, model_name_or_path, dtype, trust_remote_code
        )
        return cls(model, tokenizer, batch_size=batch_size, max_length=max_length)

    def _conversation_ids(self, prompt: str, response: str) -> list[int]:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]  # the template holds any BOS already
        return ids[: self.max_length] if self.max_length else ids

    def _head(self, output) -> torch.Tensor:
        score = getattr(output, "score", None) if not isinstance(output, tuple) else None
        if score is not None:
            return score.float().reshape(score.shape[0], -1)[:, 0]
        logits = output.logits if not isinstance(output, tuple) else output[0]
        if logits.shape[-1] != 1:
            raise ValueError(
                f"The reward model has {logits.shape[-1]} output logits and no `.score` field, so it is unclear which "
                "one is the reward. Use a single-logit reward model (num_labels=1) or an ArmoRM-style model."
            )
        return logits.float()[:, 0]

    @torch.no_grad()
    def score(self, prompts: list[dict[str, Any]], responses: list[str]) -> list[float]:
        _check_lengths(prompts, responses)
        ids = [self._conversation_ids(p["prompt"], r) for p, r in zip(prompts, responses, strict=True)]
        pad_id = self.tokenizer.pad_token_id
        device = self.model.device
        scores: list[float] = []
        for start in range(0, len(ids), self.batch_size):
            batch = ids[start : start + self.batch_size]
            width = max(map(len, batch))
            input_ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in batch], device=device)
            mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in batch], device=device)
            scores.extend(self._head(self.model(input_ids=input_ids, attention_mask=mask)).tolist())
        return scores


def build_scorer(
    kind: str,
    reward_model_name_or_path: str | None = None,
    batch_size: int = 8,
    trust_remote_code: bool = False,
    max_length: int | None = None,
) -> Scorer:
    if kind == "ifeval":
        return IFEvalScorer()
    if kind == "reward_model":
        if not reward_model_name_or_path:
            raise ValueError("scorer 'reward_model' needs `reward_model_name_or_path`.")
        return RewardModelScorer.from_pretrained(
            reward_model_name_or_path, batch_size, trust_remote_code=trust_remote_code, max_length=max_length
        )
    raise ValueError(f"Unknown scorer {kind!r}; use 'ifeval' or 'reward_model'.")


def select_pair(scores: list[float], lengths: list[int]) -> tuple[int, int] | None:
    """Indices (chosen, rejected) among one prompt's samples, or None when all scores tie.

    chosen = the highest score, ties broken by length (shortest wins);
    rejected = the lowest score, ties broken by length (longest loses).
    A prompt whose best and worst scores are equal carries no preference signal under the scorer and is dropped,
    even if the samples differ in length.
    """
    if len(scores) != len(lengths) or len(scores) < 2:
        raise ValueError(f"select_pair needs >= 2 samples with one length each, got {len(scores)} and {len(lengths)}.")
    order = range(len(scores))
    chosen = min(order, key=lambda i: (-scores[i], lengths[i], i))
    rejected = min(order, key=lambda i: (scores[i], -lengths[i], i))
    if scores[chosen] == scores[rejected]:
        return None
    return chosen, rejected
