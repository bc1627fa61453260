#!/usr/bin/env python
"""The one-GPU check, ready for when a GPU machine is at hand (`bash bench/gpu_check.sh`, `make gpu-check`).

In under 8 minutes on one H100/H200, offline, with a model initialised at random from a config (no weights to
download):

1. builds a 1B-class Llama (Llama-3.2-1B's shape: 16 layers, hidden 2048, 32 heads / 8 KV heads, vocabulary 128,256,
   tied embeddings; ~1.24B parameters) in bf16, with the offline test tokenizer;
2. runs `scripts/preflight.py` on it (AdaDPO, packed rows, the attention kernel below): the step-0 identity, packed ==
   padded, the longest micro-batch's memory and time;
3. measures stock TRL `DPOTrainer` vs adadpo padded vs adadpo packed (`bench/gpu_throughput.py`: real tokens/s, MFU
   against this GPU's measured bf16 matmul peak, peak GPU memory), on long-tailed synthetic pairs;
4. writes `gpu_check.json` and `gpu_check.md` (one table) into `--out`.

The attention kernel is the best one the machine has: flash-attention 2 when `flash_attn` imports, else PyTorch's
SDPA (which packs through position ids too). `--toy` runs the same pipeline on a tiny model on the CPU in fp32 (the
CI test); its numbers mean nothing.

    bash bench/gpu_check.sh                      # GPU, ~1B model
    bash bench/gpu_check.sh --toy --out /tmp/gc  # CPU, tiny model, ~1 min
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

# Llama-3.2-1B's shape (its config.json), random weights
LLAMA_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
}
TOY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
       "num_key_value_heads": 2, "max_position_embeddings": 2048, "tie_word_embeddings": False}  # fmt: skip
SETTINGS = {  # GPU, toy
    "batch_size": (4, 4),
    "max_length": (2048, 1024),
    "num_pairs": (64, 16),
    "warmup_steps": (2, 1),
    "measured_steps": (5, 1),
}
METHODS = ["trl-dpo", "adadpo", "adadpo-packed"]


def attention_kernel(on_gpu: bool) -> str:
    return "flash_attention_2" if on_gpu and importlib.util.find_spec("flash_attn") else "sdpa"


def build_model(folder: Path, on_gpu: bool) -> int:
    """A random-initialised Llama saved with the offline tokenizer; its parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from adadpo.testing import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    shape = LLAMA_1B if on_gpu else TOY | {"vocab_size": len(tokenizer)}
    config = LlamaConfig(**shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cuda" if on_gpu else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if on_gpu else torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def run_preflight(model_dir: Path, data: Path, work: Path, attention: str, on_gpu: bool, batch: int, length: int):
    """`scripts/preflight.py` on the model (AdaDPO, packed): its exit code and its JSON report."""
    report = work / "preflight.json"
    argv = [
        f"--model_name_or_path={model_dir}", f"--dataset_name={data}", f"--output_dir={work / 'preflight-run'}",
        "--loss_type=adadpo", "--padding_free=true", f"--attn_implementation={attention}",
        f"--per_device_train_batch_size={batch}", f"--global_batch_size={batch}", f"--max_length={length}",
        f"--bf16={str(on_gpu).lower()}", f"--use_cpu={str(not on_gpu).lower()}", "--report_to=none",
        "--gradient_checkpointing=false", f"--report={report}", "--sample_rows=16",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "preflight.py"), *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    (work / "preflight.log").write_text(done.stdout + done.stderr)
    checks = json.loads(report.read_text())["checks"] if report.exists() else []
    return done.returncode, checks


def markdown(payload: dict) -> str:
    failed = [c["name"] for c in payload["preflight"]["checks"] if c["status"] == "FAIL"]
    lines = [
        f"# GPU check, {payload['date']}",
        "",
        f"Machine: {'; '.join(f'{k} {v}' for k, v in payload['machine'].items())}.",
        "",
        f"Model: random Llama, {payload['parameters'] / 1e6:,.1f}M parameters, "
        f"{'bf16' if payload['on_gpu'] else 'fp32 (toy)'}; attention `{payload['attention']}`; "
        f"batch {payload['settings']['batch_size']} pairs, max_length {payload['settings']['max_length']}.",
        "",
        f"Preflight: exit {payload['preflight']['exit_code']}, "
        f"{len(payload['preflight']['checks'])} checks, failed: {', '.join(failed) or 'none'}.",
        "",
        payload["throughput"]["table"],
        "",
        f"Wall time: {payload['wall_seconds'] / 60:.1f} min.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy", action="store_true", help="tiny model on the CPU: checks the pipeline only")
    parser.add_argument("--out", default=str(BENCH / "results" / "gpu_check"), help="folder for the JSON and table")
    args = parser.parse_args(argv)
    import torch

    on_gpu = not args.toy
    if on_gpu and not torch.cuda.is_available():
        sys.exit("bench/gpu_check.py needs a CUDA GPU (or --toy for the CPU pipeline check).")
    started = time.time()
    settings = {key: value[0 if on_gpu else 1] for key, value in SETTINGS.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="adadpo-gpu-check-"))
    attention = attention_kernel(on_gpu)

    print(f"[1/3] random Llama ({'1B-class, bf16' if on_gpu else 'toy, fp32'}) ...", flush=True)
    parameters = build_model(work / "model", on_gpu)
    from length_mix import make_length_mix_rows
    from transformers import AutoTokenizer

    from adadpo.files import write_jsonl_atomic

    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    data = write_jsonl_atomic(work / "pairs.jsonl", make_length_mix_rows(tokenizer, settings["num_pairs"], seed=0))

    print(f"[2/3] preflight ({attention}) ...", flush=True)
    exit_code, checks = run_preflight(
        work / "model", data, work, attention, on_gpu, settings["batch_size"], settings["max_length"]
    )

    print("[3/3] throughput: stock TRL vs adadpo padded vs adadpo packed ...", flush=True)
    import gpu_throughput

    throughput = gpu_throughput.main([
        "--device", "cuda" if on_gpu else "cpu", "--model-dir", str(work / "model"), "--methods", *METHODS,
        "--attn-implementation", attention, "--results-dir", str(work), "--rounds", "1",
        *(f"--{key.replace('_', '-')}={value}" for key, value in settings.items()),
    ])  # fmt: skip
    payload = {
        "date": throughput["date"],
        "machine": throughput["machine"],
        "on_gpu": on_gpu,
        "attention": attention,
        "parameters": parameters,
        "settings": settings,
        "preflight": {"exit_code": exit_code, "checks": checks},
        "throughput": {key: throughput[key] for key in ("summary", "table") if key in throughput}
        | {key: value for key, value in throughput.items() if key.startswith("peak_")},
        "wall_seconds": time.time() - started,
    }
    (out / "gpu_check.json").write_text(json.dumps(payload, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(payload))
    print("\n" + markdown(payload), flush=True)
    return 0 if exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
