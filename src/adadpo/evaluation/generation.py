"""Batched sampling from a chat model, shared by `scripts/generate_preferences.py` and `scripts/evaluate.py`.

transformers `generate` (left padding, the tokenizer's chat template, a tqdm bar) everywhere; vLLM instead when it
is importable *and* a CUDA device is present (`backend="auto"`). Results are deterministic for a given seed,
backend and batch size: the transformers path reseeds torch with `seed + batch_index` before every batch.
Sampling is exactly what the caller asks for: the model's own generation_config.json contributes only its
end-of-turn token ids, not its default temperature, top-k/top-p or repetition penalty.
"""

import gc
import importlib.util
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, set_seed


BACKENDS = ("auto", "transformers", "vllm")


@dataclass(frozen=True)
class SamplingConfig:
    """`temperature == 0` means greedy decoding; `n` samples per prompt need `temperature > 0`."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"`n` (samples per prompt) must be >= 1, got {self.n}.")
        if self.temperature < 0:
            raise ValueError(f"`temperature` must be >= 0 (0 = greedy), got {self.temperature}.")
        if self.n > 1 and self.temperature == 0:
            raise ValueError(f"Greedy decoding (temperature 0) gives {self.n} identical samples: set temperature > 0.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be >= 1, got {self.max_new_tokens}.")


@dataclass
class Generations:
    texts: list[list[str]]  # [prompt][sample]
    num_tokens: list[list[int]]  # generated tokens per sample, end-of-turn token excluded


def vllm_usable() -> bool:
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def chat_prompt_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Each prompt as one user turn through the tokenizer's chat template, with the assistant header appended.
    The template already holds any BOS, so no special tokens are added again."""
    if not tokenizer.chat_template:
        raise ValueError(
            f"The tokenizer of {tokenizer.name_or_path!r} has no chat template; generation needs one. "
            "Use an instruct/chat model or add `chat_template` to its tokenizer_config.json."
        )
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _stop_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [] if ids is None else [ids])
    ids.add(tokenizer.eos_token_id)
    return {i for i in ids if i is not None}


def generate_transformers(
    model, tokenizer, prompts: list[str], sampling: SamplingConfig, batch_size: int = 8, progress: bool = True
) -> Generations:
    """Sample `sampling.n` responses per prompt with `model.generate`, `batch_size` prompts at a time."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    stop_ids = _stop_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids)
    config = GenerationConfig(
        do_sample=sampling.temperature > 0,
        temperature=sampling.temperature if sampling.temperature > 0 else None,
        top_p=sampling.top_p if sampling.temperature > 0 else None,
        top_k=0 if sampling.temperature > 0 else None,  # plain temperature/top-p sampling, as in vLLM
        repetition_penalty=1.0,  # unset fields would be filled from the model's generation_config.json
        max_new_tokens=sampling.max_new_tokens,
        num_return_sequences=sampling.n,
        eos_token_id=sorted(stop_ids),
        pad_token_id=pad_id,
    )
    prompt_ids = chat_prompt_ids(tokenizer, prompts)
    texts, num_tokens = [], []
    model.eval()
    with tqdm(total=len(prompts), desc="generating", unit="prompt", disable=not progress) as bar:
        for batch_index, start in enumerate(range(0, len(prompts), batch_size)):
            batch = prompt_ids[start : start + batch_size]
            width = max(map(len, batch))  # left padding keeps every prompt flush against its first new token
            input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in batch], device=model.device)
            attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
            set_seed(sampling.seed + batch_index)
            with torch.no_grad():
                out = model.generate(
                    input_ids=input_ids, attention_mask=attention_mask.to(model.device), generation_config=config
                )
            for row_index, row in enumerate(out[:, width:].tolist()):
                length = next((i for i, t in enumerate(row) if t in stop_ids or t == pad_id), len(row))
                if row_index % sampling.n == 0:
                    texts.append([])
                    num_tokens.append([])
                texts[-1].append(tokenizer.decode(row[:length], skip_special_tokens=True).strip())
                num_tokens[-1].append(length)
            bar.update(len(batch))
    return Generations(texts, num_tokens)


def generate_vllm(
    model_name_or_path: str, prompts: list[str], sampling: SamplingConfig, dtype: str = "auto", **llm_kwargs
) -> Generations:  # pragma: no cover - needs vLLM and a CUDA GPU, neither exists in CI
    """The same contract on vLLM: prompts go in as token ids so the template's BOS is not doubled."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_name_or_path, dtype=dtype, seed=sampling.seed, **llm_kwargs)
    tokenizer = llm.get_tokenizer()
    params = SamplingParams(
        n=sampling.n,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_new_tokens,
        seed=sampling.seed,
        repetition_penalty=1.0,
    )
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in chat_prompt_ids(tokenizer, prompts)], params)
    stop_ids = {tokenizer.eos_token_id}
    texts = [[o.text.strip() for o in out.outputs] for out in outputs]
    num_tokens = [
        [len(o.token_ids) - int(bool(o.token_ids) and o.token_ids[-1] in stop_ids) for o in out.outputs]
        for out in outputs
    ]
    del llm
    gc.collect()
    torch.cuda.empty_cache()
    return Generations(texts, num_tokens)


def load_pretrained(model_class, model_name_or_path: str, dtype: str = "auto", trust_remote_code: bool = False):
    """`model_class.from_pretrained` on the GPU when there is one, and the tokenizer. `dtype="auto"` = bfloat16 on
    GPU, float32 on CPU (for generation and reward scoring alike)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    model = model_class.from_pretrained(
        model_name_or_path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
    ).to(device)
    return model, tokenizer


def load_causal_lm(model_name_or_path: str, dtype: str = "auto", trust_remote_code: bool = False):
    return load_pretrained(AutoModelForCausalLM, model_name_or_path, dtype, trust_remote_code)


def generate(
    model_name_or_path: str,
    prompts: list[str],
    sampling: SamplingConfig,
    *,
    batch_size: int = 8,
    backend: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    progress: bool = True,
) -> Generations:
    """Load a model, sample, and free it again (so several models can be evaluated one after another)."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown generation backend {backend!r}; use one of {BACKENDS}.")
    if backend == "vllm" and not vllm_usable():
        raise ValueError("backend 'vllm' needs the `vllm` package and a CUDA GPU; use backend 'transformers'.")
    if backend == "vllm" or (backend == "auto" and vllm_usable()):  # pragma: no cover - GPU only
        return generate_vllm(model_name_or_path, prompts, sampling, dtype, trust_remote_code=trust_remote_code)
    model, tokenizer = load_causal_lm(model_name_or_path, dtype, trust_remote_code)
    try:
        return generate_transformers(model, tokenizer, prompts, sampling, batch_size, progress)
    finally:
        del model
        gc.collect()
