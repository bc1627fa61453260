"""Tiny, offline stand-ins for tests, benchmarks and docs: a tokenizer trained with `tokenizers`, a random causal LM
built from a config, and synthetic preference rows. Nothing here downloads anything."""

import random
from pathlib import Path

from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast


# A ChatML-style template, so conversational data works with the tiny tokenizer.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

_WORDS = (
    "the a an cat dog bird fish tree river mountain city house car road book pen paper light dark red blue green "
    "small large quick slow happy sad runs jumps writes reads sings swims flies sleeps eats drinks is are was were "
    "answer question please explain why how what when where who because therefore however also not never always "
    "one two three four five six seven eight nine ten hundred list bullet title json yes no maybe good bad best"
).split()


def random_sentence(rng: random.Random, min_words: int = 1, max_words: int = 12) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(min_words, max_words)))


def build_tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in memory on a small synthetic corpus (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(0)
    corpus = [random_sentence(rng, 3, 20) for _ in range(500)]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token=None,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_model(tokenizer, arch: str = "llama", hidden_size: int = 32, num_layers: int = 2, seed: int = 0):
    """A random causal LM small enough to train in seconds on a CPU."""
    import torch
    from transformers import LlamaConfig, MixtralConfig, Qwen2Config

    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mixtral": MixtralConfig}[arch]
    experts = {"num_local_experts": 4, "num_experts_per_tok": 2} if arch == "mixtral" else {}  # a tiny MoE
    config = config_cls(
        **experts,
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def save_tiny_model(output_dir: str | Path, arch: str = "llama", **model_kwargs) -> Path:
    """Write a tiny model + tokenizer folder that `from_pretrained` (and so every recipe) can load."""
    output_dir = Path(output_dir)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, arch=arch, **model_kwargs)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def make_preference_rows(n: int, seed: int = 0, conversational: bool = True, implicit_prompt: bool = False):
    """Synthetic preference pairs: chosen answers are short and on-topic, rejected ones longer and noisier.

    `implicit_prompt=True` gives HH-RLHF-style rows (no `prompt` column; the prompt is the shared start of both
    `chosen` and `rejected`).
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = random_sentence(rng, 2, 10) + "?"
        chosen = random_sentence(rng, 1, 8) + "."
        rejected = random_sentence(rng, 4, 16) + "."
        if chosen == rejected:
            rejected += " no"
        if implicit_prompt:
            if conversational:
                user = [{"role": "user", "content": prompt}]
                rows.append(
                    {
                        "chosen": user + [{"role": "assistant", "content": chosen}],
                        "rejected": user + [{"role": "assistant", "content": rejected}],
                    }
                )
            else:
                rows.append({"chosen": f"Q: {prompt} A: {chosen}", "rejected": f"Q: {prompt} A: {rejected}"})
        elif conversational:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
        else:
            rows.append({"prompt": f"Q: {prompt} A:", "chosen": " " + chosen, "rejected": " " + rejected})
    return rows
