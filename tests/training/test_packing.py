"""Packed (padding-free) preference batches give the same per-sequence log-probs, loss and gradients as padded ones."""

import random

import pytest
import torch
import torch.nn.functional as F
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import add_fused_lm_head

from adadpo.testing import build_tiny_model, build_tiny_tokenizer
from adadpo.training.collators import DataCollatorForPackedPreference, first_fit_rows
from adadpo.training.logps import packed_shift_labels, sequence_logps
from adadpo.training.packing import (
    SUPPORTED_PACKING_IMPLEMENTATIONS,
    check_packed_model,
    check_packing_supported,
    is_packed_batch,
)


MAX_LENGTH = 24
BETA = 0.5
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def make_model(tokenizer, attn="sdpa", arch="llama", seed=0):
    model = build_tiny_model(tokenizer, arch=arch, seed=seed)
    model.set_attn_implementation(attn)
    add_fused_lm_head(model)
    return model


def make_examples(num_pairs, seed=0):
    """Mixed lengths: a 1-token completion, a pair exactly at MAX_LENGTH, a rejected answer cut by truncation, a
    prompt that alone fills MAX_LENGTH (its completions vanish), an empty prompt, then random lengths."""
    rng = random.Random(seed)

    def ids(n):
        return [rng.randrange(5, 500) for _ in range(n)]

    fixed = [
        {"prompt_ids": ids(6), "chosen_ids": ids(1), "rejected_ids": ids(MAX_LENGTH + 9)},  # 1 token / truncated
        {"prompt_ids": ids(10), "chosen_ids": ids(MAX_LENGTH - 10), "rejected_ids": ids(3)},  # exactly MAX_LENGTH
        {"prompt_ids": ids(MAX_LENGTH), "chosen_ids": ids(4), "rejected_ids": ids(2)},  # no completion survives
        {"prompt_ids": [], "chosen_ids": ids(5), "rejected_ids": ids(1)},  # empty prompt: completion starts a sequence
    ]
    random_pairs = [
        {
            "prompt_ids": ids(rng.randint(1, 12)),
            "chosen_ids": ids(rng.randint(1, 14)),
            "rejected_ids": ids(rng.randint(1, 14)),
        }
        for _ in range(max(0, num_pairs - len(fixed)))
    ]
    return (fixed + random_pairs)[:num_pairs]


def collate(tokenizer, examples, packed, max_tokens_per_batch=None):
    if packed:
        collator = DataCollatorForPackedPreference(
            pad_token_id=tokenizer.pad_token_id, max_length=MAX_LENGTH, max_tokens_per_batch=max_tokens_per_batch
        )
    else:
        collator = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=MAX_LENGTH)
    return collator(examples)


def dpo_step(policy, reference, batch):
    """Summed logps of policy and reference, the sigmoid DPO loss of the two halves, and its parameter gradients."""
    policy.zero_grad(set_to_none=True)
    with torch.no_grad():
        ref = sequence_logps(reference, batch)
    out = sequence_logps(policy, batch)
    chosen, rejected = out.logps.chunk(2)
    ref_chosen, ref_rejected = ref.logps.chunk(2)
    loss = -F.logsigmoid(BETA * ((chosen - ref_chosen) - (rejected - ref_rejected))).mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in policy.named_parameters() if p.requires_grad}
    return out, ref, loss.detach(), grads


def assert_same_step(step_a, step_b):
    (out_a, ref_a, loss_a, grads_a), (out_b, ref_b, loss_b, grads_b) = step_a, step_b
    torch.testing.assert_close(out_a.logps, out_b.logps, **TOL)
    torch.testing.assert_close(ref_a.logps, ref_b.logps, **TOL)
    assert torch.equal(out_a.lengths, out_b.lengths)
    assert int(out_a.num_tokens) == int(out_b.num_tokens)
    torch.testing.assert_close(loss_a, loss_b, **TOL)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")
    assert any(g.abs().sum() > 0 for g in grads_a.values())


def test_collator_hand_example():
    examples = [
        {
            "prompt_ids": [1, 2, 3],
            "chosen_ids": [4, 5],
            "rejected_ids": [6],
            "ref_chosen_logps": -1.5,
            "reward_margin": 2,
        },
        {
            "prompt_ids": [7, 8],
            "chosen_ids": [9],
            "rejected_ids": [10, 11],
            "ref_chosen_logps": -2.5,
            "reward_margin": 0,
        },
    ]
    batch = DataCollatorForPackedPreference(pad_token_id=0)(examples)
    # sequences: 0 = 1 2 3|4 5, 1 = 7 8|9, 2 = 1 2 3|6, 3 = 7 8|10 11 (chosen first, then rejected)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 7, 8, 9, 1, 2, 3, 6, 7, 8, 10, 11]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3]]
    assert batch["completion_mask"].tolist() == [[0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 1]]
    assert batch["sequence_ids"].tolist() == [[0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]]
    assert batch["num_pairs"] == 2 and "attention_mask" not in batch and is_packed_batch(batch)
    assert batch["ref_chosen_logps"].dtype == torch.float32 and batch["ref_chosen_logps"].tolist() == [-1.5, -2.5]
    assert batch["reward_margin"].tolist() == [2.0, 0.0] and "ref_rejected_logps" not in batch
    assert not is_packed_batch(DataCollatorForPreference(pad_token_id=0)(examples))
    # Labels: a sequence's first token is never predicted from the previous sequence, prompts are never scored.
    labels = packed_shift_labels(batch["input_ids"], batch["completion_mask"], batch["sequence_ids"])
    assert labels.tolist() == [[-100, -100, 4, 5, -100, -100, 9, -100, -100, -100, 6, -100, -100, 10, 11, -100]]

    # Budget of 6 tokens, truncation at 4: lengths 4, 3, 4, 4 -> first-fit decreasing gives rows {0}, {2}, {3}, {1}.
    split = DataCollatorForPackedPreference(pad_token_id=0, max_length=4, max_tokens_per_batch=6)(examples)
    assert split["sequence_ids"].tolist() == [[0, 0, 0, 0], [2, 2, 2, 2], [3, 3, 3, 3], [1, 1, 1, -1]]
    assert split["input_ids"].tolist() == [[1, 2, 3, 4], [1, 2, 3, 6], [7, 8, 10, 11], [7, 8, 9, 0]]
    assert split["position_ids"].tolist() == [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 0]]
    assert split["completion_mask"].tolist() == [[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 1, 1], [0, 0, 1, 0]]


def test_first_fit_rows_respects_budget_and_keeps_every_sequence():
    lengths = [7, 1, 5, 3, 3, 9, 2, 6]
    rows = first_fit_rows(lengths, 10)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert len(rows) == -(-sum(lengths) // 10)  # this mix packs perfectly: 36 tokens in 4 rows
    assert first_fit_rows(lengths, None) == [list(range(len(lengths)))]


def test_collator_rejects_bad_settings():
    with pytest.raises(ValueError, match="max_tokens_per_batch >= max_length"):
        DataCollatorForPackedPreference(pad_token_id=0, max_length=32, max_tokens_per_batch=16)
    with pytest.raises(ValueError, match="truncation_mode"):
        DataCollatorForPackedPreference(pad_token_id=0, truncation_mode="keep_middle")
    too_long = [{"prompt_ids": [1] * 8, "chosen_ids": [2], "rejected_ids": [3]}]
    with pytest.raises(ValueError, match="does not fit in max_tokens_per_batch=4"):
        DataCollatorForPackedPreference(pad_token_id=0, max_tokens_per_batch=4)(too_long)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("num_pairs", [1, 7])
def test_packed_equals_padded(tokenizer, attn, num_pairs):
    policy, reference = make_model(tokenizer, attn), make_model(tokenizer, attn, seed=1)
    examples = make_examples(num_pairs)
    padded = dpo_step(policy, reference, collate(tokenizer, examples, packed=False))
    packed_batch = collate(tokenizer, examples, packed=True)
    assert packed_batch["input_ids"].shape[0] == 1
    packed = dpo_step(policy, reference, packed_batch)
    assert_same_step(padded, packed)
    # The fixtures really are mixed: a 1-token completion, a truncated one, one emptied by truncation, no prompt.
    lengths = packed[0].lengths.tolist()
    assert lengths[0] == 1 and lengths[num_pairs] == MAX_LENGTH - 6
    if num_pairs > 3:  # truncation leaves no completion; with no prompt, a completion's first token is unscored
        assert lengths[2] == 0 and lengths[3] == 4 and lengths[num_pairs + 3] == 0
    assert int(packed[0].num_tokens) == int(packed_batch["sequence_ids"].ge(0).sum())


def test_packed_equals_padded_qwen2(tokenizer):
    policy, reference = make_model(tokenizer, arch="qwen2"), make_model(tokenizer, arch="qwen2", seed=1)
    examples = make_examples(7)
    assert_same_step(
        dpo_step(policy, reference, collate(tokenizer, examples, packed=False)),
        dpo_step(policy, reference, collate(tokenizer, examples, packed=True)),
    )


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_token_budget_rows_equal_padded(tokenizer, attn):
    policy, reference = make_model(tokenizer, attn), make_model(tokenizer, attn, seed=1)
    examples = make_examples(7)
    batch = collate(tokenizer, examples, packed=True, max_tokens_per_batch=MAX_LENGTH + 8)
    assert batch["input_ids"].shape[0] > 1 and batch["input_ids"].shape[1] <= MAX_LENGTH + 8
    assert (batch["sequence_ids"] == -1).any()  # some rows carry padding
    assert_same_step(
        dpo_step(policy, reference, collate(tokenizer, examples, packed=False)), dpo_step(policy, reference, batch)
    )


def test_transformers_really_isolates_packed_sequences(tokenizer):
    """Controls that make the equality above meaningful: without restarting position_ids the numbers change, and
    with them, editing one sequence leaves every other sequence of the row bit-for-bit alone."""
    model = make_model(tokenizer)
    examples = make_examples(7)
    batch = collate(tokenizer, examples, packed=True)
    with torch.no_grad():
        reference = sequence_logps(model, batch).logps
        unrestarted = dict(batch, position_ids=torch.arange(batch["input_ids"].shape[1]).unsqueeze(0))
        leaky = sequence_logps(model, unrestarted).logps
        assert (leaky[1:] - reference[1:]).abs().max() > 1e-2

        edited_examples = [dict(examples[0], prompt_ids=[7] * len(examples[0]["prompt_ids"]))] + examples[1:]
        edited = sequence_logps(model, collate(tokenizer, edited_examples, packed=True)).logps
    changed = [0, len(examples)]  # pair 0's chosen and rejected share the edited prompt
    others = [s for s in range(2 * len(examples)) if s not in changed]
    assert (edited[changed] - reference[changed]).abs().min() > 1e-3
    torch.testing.assert_close(edited[others], reference[others], rtol=0, atol=1e-6)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_packed_equals_padded(tokenizer, use_reentrant):
    examples = make_examples(7)
    plain, reference = make_model(tokenizer), make_model(tokenizer, seed=1)
    checkpointed = make_model(tokenizer)
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    checkpointed.train()
    plain.train()
    assert checkpointed.model.gradient_checkpointing
    assert_same_step(
        dpo_step(plain, reference, collate(tokenizer, examples, packed=False)),
        dpo_step(checkpointed, reference, collate(tokenizer, examples, packed=True)),
    )


def test_peft_lora_packed_equals_padded(tokenizer):
    from peft import LoraConfig, get_peft_model

    base = make_model(tokenizer)  # the fused head goes on the base model, before PEFT wraps it
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    policy = get_peft_model(base, lora)
    reference = make_model(tokenizer, seed=1)
    examples = make_examples(7)
    padded_batch, packed_batch = collate(tokenizer, examples, False), collate(tokenizer, examples, True)
    padded, packed = dpo_step(policy, reference, padded_batch), dpo_step(policy, reference, packed_batch)
    assert_same_step(padded, packed)
    assert all("lora_" in name for name in packed[3])
    # Reference = the base model with the adapter off (TRL's PEFT setup), through the packed path too.
    with torch.no_grad(), policy.disable_adapter():
        torch.testing.assert_close(
            sequence_logps(policy, padded_batch).logps, sequence_logps(policy, packed_batch).logps, **TOL
        )


def flash_model(tokenizer, seed=0):
    """A model on transformers' real flash_attention_2 path (kernel: tests/flash_reference.py, `emulated_flash`)."""
    model = make_model(tokenizer, seed=seed)
    model.config._attn_implementation = "flash_attention_2"
    return model


@pytest.mark.parametrize("max_tokens_per_batch", [None, MAX_LENGTH])
def test_flash_varlen_packed_equals_padded_sdpa(tokenizer, emulated_flash, max_tokens_per_batch):
    """Several rows are flattened to one (transformers reads packing from a single row), cu_seqlens come from the
    restarting position ids, and log-probs, loss and gradients equal padded sdpa's."""
    examples = make_examples(7)
    batch = collate(tokenizer, examples, packed=True, max_tokens_per_batch=max_tokens_per_batch)
    assert (batch["input_ids"].shape[0] > 1) == (max_tokens_per_batch is not None)
    sdpa = dpo_step(make_model(tokenizer), make_model(tokenizer, seed=1), collate(tokenizer, examples, packed=False))
    flash = dpo_step(flash_model(tokenizer), flash_model(tokenizer, seed=1), batch)
    assert_same_step(sdpa, flash)
    assert flash[0].per_token_logps.shape == batch["input_ids"].shape


def test_flash_varlen_path_really_runs_and_separates_sequences(tokenizer, emulated_flash):
    """Controls: the varlen kernel is what ran (position ids that do not restart change the numbers), and a leaky
    kernel that ignores cu_seqlens is caught by the same comparison."""
    from tests.helpers import flash_reference

    examples, model = make_examples(7), flash_model(tokenizer)
    batch = collate(tokenizer, examples, packed=True)
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs["cu_seqlens_q"].tolist())
        return original(*args, **kwargs)

    original = flash_reference.flash_attn_varlen_func
    with torch.no_grad():
        padded = sequence_logps(make_model(tokenizer), collate(tokenizer, examples, packed=False)).logps
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(flash_reference, "flash_attn_varlen_func", counting)
            flash_reference.emulate_flash(mp)
            packed = sequence_logps(model, batch).logps
        unrestarted = dict(batch, position_ids=torch.arange(batch["input_ids"].shape[1]).unsqueeze(0))
        assert (sequence_logps(model, unrestarted).logps[1:] - padded[1:]).abs().max() > 1e-2
    torch.testing.assert_close(packed, padded, **TOL)
    assert len(calls) == model.config.num_hidden_layers and len(calls[0]) == 2 * len(examples) + 1
    with pytest.MonkeyPatch.context() as mp:
        flash_reference.emulate_flash(mp, leaky=True)
        with torch.no_grad():
            leaky = sequence_logps(flash_model(tokenizer), batch).logps
    assert (leaky[1:] - padded[1:]).abs().max() > 1e-2


def test_flash_varlen_gradient_accumulation_equals_one_padded_batch(tokenizer, emulated_flash):
    """Two packed flash micro-batches accumulated = one padded sdpa batch of all pairs (mean of equal halves)."""
    examples = make_examples(8)
    whole = dpo_step(make_model(tokenizer), make_model(tokenizer, seed=1), collate(tokenizer, examples, False))
    policy, reference = flash_model(tokenizer), flash_model(tokenizer, seed=1)
    grads = {}
    for half in (examples[:4], examples[4:]):
        for name, grad in dpo_step(policy, reference, collate(tokenizer, half, True))[3].items():
            grads[name] = grads.get(name, 0) + grad / 2
    for name, grad in whole[3].items():
        torch.testing.assert_close(grads[name], grad, **TOL, msg=lambda m, n=name: f"{n}: {m}")


def test_flash_varlen_gradient_checkpointing_and_lora(tokenizer, emulated_flash):
    from peft import LoraConfig, get_peft_model

    examples = make_examples(7)
    padded_batch, packed_batch = collate(tokenizer, examples, False), collate(tokenizer, examples, True)
    checkpointed = flash_model(tokenizer)
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed.train()
    plain = make_model(tokenizer)
    plain.train()
    reference = make_model(tokenizer, seed=1)
    assert_same_step(dpo_step(plain, reference, padded_batch), dpo_step(checkpointed, reference, packed_batch))

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    sdpa_lora = get_peft_model(make_model(tokenizer), lora)
    flash_lora = get_peft_model(flash_model(tokenizer), lora)
    flash_lora.load_state_dict(sdpa_lora.state_dict())
    padded, packed = dpo_step(sdpa_lora, reference, padded_batch), dpo_step(flash_lora, reference, packed_batch)
    assert_same_step(padded, packed)
    assert packed[3] and all("lora_" in name for name in packed[3])


def test_unsupported_attention_is_refused(tokenizer):
    for name in (*SUPPORTED_PACKING_IMPLEMENTATIONS, None, "kernels-community/flash-attn2@v1"):
        check_packing_supported(name)
    for name in ("paged|eager", "kernels-community/metal-flash-sdpa", "my_custom_attention"):
        with pytest.raises(ValueError, match=r"attend across the packed sequences.*attn_implementation.*padding_free"):
            check_packing_supported(name)
    model = make_model(tokenizer, "paged|eager")
    with pytest.raises(ValueError, match="'paged\\|eager'.*flash_attention_2"):
        check_packed_model(model)


def test_prompt_learning_peft_is_refused_and_unpatched_model_is_explained(tokenizer):
    from peft import PromptTuningConfig, get_peft_model

    packed = collate(tokenizer, make_examples(2), packed=True)
    prompt_tuned = get_peft_model(
        make_model(tokenizer), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)
    )
    with pytest.raises(ValueError, match="prompt-learning PEFT.*LoRA"):
        check_packed_model(prompt_tuned)
    with pytest.raises(ValueError, match="prompt-learning PEFT.*LoRA"):  # a config TRL is about to apply
        check_packed_model(make_model(tokenizer), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    unpatched = build_tiny_model(tokenizer)
    with pytest.raises(RuntimeError, match="add_fused_lm_head"):
        sequence_logps(unpatched, collate(tokenizer, make_examples(2), packed=False))
    with pytest.raises(ValueError, match="missing \\['completion_mask'\\]"):
        sequence_logps(unpatched, {"input_ids": packed["input_ids"], "attention_mask": packed["completion_mask"]})
