"""Sequence parallelism (DeepSpeed's Ulysses attention, `adadpo.training.sequence_parallel`) on packed preference rows,
proven equal to one process.

The sliced computation: two gloo processes, DeepSpeed's `UlyssesSPAttentionHF` registered for the tiny model
(flash-attention's varlen path, on CPU through the reference kernel of tests/helpers/flash_reference.py), a packed row
sliced by DeepSpeed's own `UlyssesSPDataLoaderAdapter`. The same process computes the whole row without slicing (in
eval mode DeepSpeed's attention steps aside), so every quantity is compared with one process's: per-sequence
log-probs and lengths, WPO weights, the loss and beta_w, and the gradients summed over the group (what DeepSpeed's
ZeRO-1/2 reduction does). The row has an odd token count (padded to a multiple of 2) and a completion that crosses
the rank boundary. End to end through `scripts/run_adadpo.py` under accelerate + DeepSpeed: tests/training/
test_sequence_parallel_e2e.py.
"""

import contextlib
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from adadpo.training.collators import DataCollatorForPackedPreference
from adadpo.training.sequence_parallel import PAIR_COLUMNS_KEY, with_pair_columns


pytestmark = pytest.mark.slow  # two processes
SP = 2
# chosen_1 = prompt 4 + 40 completion tokens (44), chosen_2 5, rejected_1 10, rejected_2 12: 71 tokens, padded to 72;
# the boundary (36) falls inside chosen_1's completion: its scored positions 3..42 are on both ranks
LENGTHS = [(4, 40, 6), (3, 2, 9)]
CASES = {
    "adadpo": {"loss": "adadpo", "reference": True},
    "dpo_ld_alpha_wpo": {"loss": "dpo", "reference": True, "ld_alpha": 0.5, "wpo": True},
    "simpo": {"loss": "simpo", "reference": False},
}


def examples():
    generator = torch.Generator().manual_seed(0)

    def ids(n):
        return torch.randint(5, 500, (n,), generator=generator).tolist()

    return [
        {"prompt_ids": ids(p), "chosen_ids": ids(c), "rejected_ids": ids(r), "reward_margin": 0.5}
        for p, c, r in LENGTHS
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, model_dir: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(SP),
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    import deepspeed
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF, UlyssesSPDataLoaderAdapter
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from adadpo.losses import PreferenceLoss
    from adadpo.training.logps import sequence_logps
    from adadpo.training.sequence_parallel import SequenceParallelGroup, attention_over_group
    from tests.helpers.flash_reference import emulate_flash

    emulate_flash(pytest.MonkeyPatch())
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)

    def load(seed_offset):
        model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="flash_attention_2")
        with torch.no_grad():  # a different reference: log-ratios away from 0
            for p in model.parameters():
                p.add_(seed_offset * 0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7)))
        add_fused_lm_head(model, outputs=("log_probs", "log_sum_sq_probs"))
        return model

    policy, reference = load(0.0), load(1.0)
    UlyssesSPAttentionHF.register_with_transformers(
        model_name_or_path=policy, core_attn_implementation="flash_attention_2", sequence_parallel_size=SP,
        micro_batch_size=1, seq_length_is_variable=True, disable_in_eval=True,
    )  # fmt: skip
    group = SequenceParallelGroup.current()
    row = DataCollatorForPackedPreference(pad_token_id=0, sequence_parallel_size=SP)(examples())
    # DeepSpeed's adapter: both ranks hold the same row (gloo gathers equal sizes); rank r keeps the r-th slice
    adapter = UlyssesSPDataLoaderAdapter([row], sp_rank=group.rank, sp_group=group.group, sp_world_size=SP,
                                         device=torch.device("cpu"))  # fmt: skip
    sliced = next(iter(adapter))
    report = {"row_tokens": int((row["sequence_ids"] >= 0).sum()), "row_length": row["input_ids"].shape[1],
              "slice_length": sliced["input_ids"].shape[1], "cases": {}}  # fmt: skip

    def run(case, batch, sp_group):
        batch = with_pair_columns(batch)
        options = {"ld_alpha": case.get("ld_alpha"), "wpo": case.get("wpo", False), "sequence_parallel": sp_group}
        policy.train() if sp_group else policy.eval()  # eval mode: DeepSpeed's attention steps aside (whole row)
        policy.zero_grad()
        out = sequence_logps(policy, batch, **options)
        ref = None
        if case["reference"]:
            reference.eval()
            with torch.no_grad(), attention_over_group(reference) if sp_group else contextlib.nullcontext():
                ref = sequence_logps(reference, batch, **options).logps.chunk(2)
        loss_fn = PreferenceLoss([case["loss"]])
        result = loss_fn(
            policy_chosen_logps=out.logps.chunk(2)[0], policy_rejected_logps=out.logps.chunk(2)[1],
            chosen_lengths=out.lengths.chunk(2)[0], rejected_lengths=out.lengths.chunk(2)[1],
            ref_chosen_logps=ref[0] if ref else None, ref_rejected_logps=ref[1] if ref else None,
            pair_log_weights=sum(out.wpo_log_weights.chunk(2)) if case.get("wpo") else None,
        )  # fmt: skip
        result.losses.mean().backward()
        grads = {n: p.grad.detach().clone() for n, p in policy.named_parameters() if p.grad is not None}
        if sp_group:  # DeepSpeed's ZeRO-1/2 reduction over the group: a sum
            for g in grads.values():
                torch.distributed.all_reduce(g, group=sp_group.group)
        return {
            "logps": out.logps.detach(),
            "lengths": out.lengths.float(),
            "ref_logps": torch.cat(ref) if ref else torch.zeros(1),
            "wpo": out.wpo_log_weights if case.get("wpo") else torch.zeros(1),
            "loss": result.losses.mean().detach().reshape(1),
            "beta_w": result.metrics.get("beta_w", torch.zeros(1)).detach().reshape(-1),
        }, grads

    for name, case in CASES.items():
        whole, whole_grads = run(case, row, None)
        split, split_grads = run(case, sliced, group)
        diffs = {key: (whole[key] - split[key]).abs().max().item() for key in whole}
        diffs["grad"] = max((whole_grads[n] - split_grads[n]).abs().max().item() for n in whole_grads)
        diffs["grad_scale"] = max(g.abs().max().item() for g in whole_grads.values())
        diffs["logps_scale"] = whole["logps"].abs().max().item()
        report["cases"][name] = diffs
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)


@pytest.fixture(scope="module")
def sliced_reports(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sp")
    mp.start_processes(_worker, args=(_free_port(), str(tiny_model_dir), str(out)), nprocs=SP, start_method="spawn")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(SP)]


def test_the_row_is_odd_padded_and_a_completion_crosses_the_boundary(sliced_reports):
    report = sliced_reports[0]
    assert report["row_tokens"] == 71 and report["row_length"] == 72 and report["slice_length"] == 36
    chosen_1 = sum(LENGTHS[0][:2])
    assert LENGTHS[0][0] < report["slice_length"] < chosen_1 - 1  # scored positions of chosen_1 on both ranks


@pytest.mark.parametrize("case", CASES)
def test_slices_over_two_ranks_equal_the_whole_row(sliced_reports, case):
    for report in sliced_reports:  # every rank ends with the same, whole-sequence quantities
        diffs = report["cases"][case]
        for key in ("logps", "ref_logps", "lengths", "wpo", "loss", "beta_w"):
            assert diffs[key] <= 1e-5 * max(1.0, diffs["logps_scale"] if "logps" in key else 1.0), (case, key, diffs)
        assert diffs["grad"] <= 1e-5 * diffs["grad_scale"], (case, diffs)


def test_the_collator_pads_to_the_group_and_keeps_pair_columns_whole():
    row = DataCollatorForPackedPreference(pad_token_id=0, sequence_parallel_size=SP, pad_to_multiple_of=3)(examples())
    assert row["input_ids"].shape[1] % 6 == 0 and row["input_ids"].shape[1] >= 71
    assert row[PAIR_COLUMNS_KEY] == {"reward_margin": [0.5, 0.5]}  # lists: DeepSpeed's adapter passes them whole
    scored = row["labels"] != -100
    assert scored.sum() == sum(c + r for _, c, r in LENGTHS)  # every completion token, no prompt token
    restored = with_pair_columns(row)
    assert PAIR_COLUMNS_KEY not in restored and restored["reward_margin"].tolist() == [0.5, 0.5]
