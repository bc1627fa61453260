"""Per-rank peak memory and step time of one long packed pair, without and with sequence parallelism, on CPU.

    python bench/sequence_parallel_memory.py [--tokens 16384] [--sp 2] [--hidden 256] [--layers 4]

SP=1 is one process training on the whole row; SP=N is N gloo processes with DeepSpeed's Ulysses attention
(`UlyssesSPAttentionHF`) and its dataloader adapter slicing the row, the loss completed over the group by
`adadpo.training.sequence_parallel` exactly as in a training run. Both run flash-attention's varlen code path through
the pure-torch kernel of tests/helpers/flash_reference.py (its CPU `scaled_dot_product_attention` needs memory linear
in the sequence). Each configuration runs in fresh processes: peak memory is the growth of the process's peak RSS over
one AdaDPO training step (forward, loss, backward) of a small random Llama; the step time is the median of the
measured steps. The activations are what SP divides: expect a ratio near 1/N, less the parts every rank keeps whole
(weights and gradients of a model this small are a few MiB).
"""

import argparse
import json
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp


REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # tests/helpers/flash_reference.py: flash's code path on CPU


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def pair_row(tokens: int, sp: int):
    """One pair whose packed row holds `tokens` tokens: a prompt of tokens/8, each completion half the rest."""
    from adadpo.training.collators import DataCollatorForPackedPreference

    generator = torch.Generator().manual_seed(0)
    prompt = tokens // 16
    completion = tokens // 2 - prompt
    example = {
        name: torch.randint(5, 500, (n,), generator=generator).tolist()
        for name, n in (("prompt_ids", prompt), ("chosen_ids", completion), ("rejected_ids", completion))
    }
    return DataCollatorForPackedPreference(pad_token_id=0, sequence_parallel_size=sp)([example])


def worker(rank: int, sp: int, port: int, options: dict, out_dir: str) -> None:
    import pytest
    from transformers import LlamaConfig, LlamaForCausalLM

    from adadpo.losses import PreferenceLoss
    from adadpo.training.logps import sequence_logps
    from adadpo.training.sequence_parallel import SequenceParallelGroup, with_pair_columns
    from adadpo.training.trl_compat import add_fused_lm_head
    from tests.helpers.flash_reference import emulate_flash

    torch.set_num_threads(options["threads"])
    emulate_flash(pytest.MonkeyPatch())
    config = LlamaConfig(vocab_size=512, hidden_size=options["hidden"], intermediate_size=4 * options["hidden"],
                         num_hidden_layers=options["layers"], num_attention_heads=8, num_key_value_heads=4,
                         max_position_embeddings=options["tokens"], attn_implementation="flash_attention_2")  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    add_fused_lm_head(model)
    row = pair_row(options["tokens"], sp)
    group = None
    if sp > 1:
        import deepspeed
        from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF, UlyssesSPDataLoaderAdapter

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(sp),
                          LOCAL_RANK=str(rank))  # fmt: skip
        deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)
        UlyssesSPAttentionHF.register_with_transformers(
            model_name_or_path=model, core_attn_implementation="flash_attention_2", sequence_parallel_size=sp,
            micro_batch_size=1, seq_length_is_variable=True,
        )  # fmt: skip
        group = SequenceParallelGroup.current()
        row = next(iter(UlyssesSPDataLoaderAdapter([row], sp_rank=group.rank, sp_group=group.group,
                                                   sp_world_size=sp, device=torch.device("cpu"))))  # fmt: skip
    batch = with_pair_columns(row)
    loss_fn = PreferenceLoss(["adadpo"])
    model.train()
    times, peaks = [], []
    for _ in range(options["warmup"] + options["steps"]):
        model.zero_grad(set_to_none=True)
        before, start = rss_mib(), time.perf_counter()
        out = sequence_logps(model, batch, sequence_parallel=group)
        chosen, rejected = out.logps.chunk(2)
        reference = (chosen.detach() - 1.0, rejected.detach() + 1.0)
        result = loss_fn(policy_chosen_logps=chosen, policy_rejected_logps=rejected,
                         chosen_lengths=out.lengths.chunk(2)[0], rejected_lengths=out.lengths.chunk(2)[1],
                         ref_chosen_logps=reference[0], ref_rejected_logps=reference[1])  # fmt: skip
        result.losses.mean().backward()
        times.append(time.perf_counter() - start)
        peaks.append(peak_rss_mib() - before)
    measured = slice(options["warmup"], None)
    report = {"sp": sp, "rank": rank, "tokens_per_rank": int(batch["input_ids"].numel()),
              "step_peak_mib": max(peaks[measured]), "step_seconds": statistics.median(times[measured]),
              "loss": result.losses.mean().item()}  # fmt: skip
    Path(out_dir, f"sp{sp}_rank{rank}.json").write_text(json.dumps(report))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(sp: int, options: dict, out_dir: str) -> list[dict]:
    mp.start_processes(worker, args=(sp, free_port(), options, out_dir), nprocs=sp, start_method="spawn")
    return [json.loads(Path(out_dir, f"sp{sp}_rank{r}.json").read_text()) for r in range(sp)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=16384, help="tokens of the packed pair (chosen + rejected)")
    parser.add_argument("--sp", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--json", help="also write the rows here")
    options = vars(parser.parse_args())
    with tempfile.TemporaryDirectory() as out_dir:
        whole = measure(1, options, out_dir)[0]
        sliced = measure(options["sp"], options, out_dir)
    assert all(abs(r["loss"] - whole["loss"]) < 1e-4 * max(1.0, abs(whole["loss"])) for r in sliced), (whole, sliced)
    print(f"One packed pair of {options['tokens']} tokens, Llama hidden {options['hidden']} x {options['layers']} "
          f"layers, AdaDPO step (forward + backward), {options['threads']} thread(s) per process, CPU\n")  # fmt: skip
    print("| SP | rank | tokens per rank | step peak memory (MiB) | ratio to SP=1 | step time (s) | ratio to SP=1 |")
    print("|---|---|---|---|---|---|---|")
    rows = [whole, *sliced]
    for r in rows:
        print(f"| {r['sp']} | {r['rank']} | {r['tokens_per_rank']} | {r['step_peak_mib']:.0f} | "
              f"{r['step_peak_mib'] / whole['step_peak_mib']:.2f} | {r['step_seconds']:.2f} | "
              f"{r['step_seconds'] / whole['step_seconds']:.2f} |")  # fmt: skip
    print(f"\nloss: SP=1 {whole['loss']:.6f}, SP={options['sp']} {sliced[0]['loss']:.6f} (equal: checked)")
    if options["json"]:
        Path(options["json"]).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
