"""The DPOConfig options our trainer applies, end to end through `scripts/run_adadpo.py`'s `main` on the tiny model:
each changes the numbers it should (and only those), and packed equals padded under it. The loss-level formulas are
checked against TRL's own code in tests/losses/test_losses_trl_types.py."""

import json

import pytest
import torch

from adadpo.testing import save_tiny_model
from adadpo.training.ref_cache import ReferenceLogpsCache
from adadpo.training.trl_compat import get_attention_implementation
from tests.helpers.runs import StepCounter, extra_callbacks, step_logs, tiny_run_args, train


def first_losses(trainer) -> list[float]:
    return [entry["loss"] for entry in step_logs(trainer)]


def run(run_adadpo, tiny_model_dir, pref_jsonl, out, **overrides):
    common = {"loss_type": "dpo", "max_steps": 2, "save_strategy": "no", "learning_rate": 1.0e-2}
    return train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, out, **{**common, **overrides}))


@pytest.mark.parametrize("option", [{"use_weighting": True}, {"ld_alpha": 0.3}], ids=["wpo", "ld_alpha"])
def test_weighting_options_change_the_loss_and_packing_keeps_it(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, option
):
    plain = first_losses(run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "plain"))
    padded = first_losses(run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "padded", **option))
    packed = first_losses(
        run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "packed", padding_free=True, **option)
    )
    assert abs(padded[1] - plain[1]) > 1e-4, "the option changed nothing"  # step 2: after an update
    assert packed == pytest.approx(padded, rel=1e-5, abs=1e-6)


def test_ld_alpha_is_part_of_the_reference_cache_key(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    cache = tmp_path / "cache"
    for name, option in (("plain", {}), ("ld", {"ld_alpha": 0.3}), ("ld-again", {"ld_alpha": 0.3})):
        trainer = run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / name, precompute_ref_log_probs=True,
                      ref_logps_cache_dir=str(cache), **option)  # fmt: skip
        assert isinstance(trainer.ref_cache, ReferenceLogpsCache)
        assert trainer.ref_cache.lookups["train"]["hit"] == (name == "ld-again"), name
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2


def test_moe_router_loss_is_added_with_its_weight(run_adadpo, pref_jsonl, tmp_path):
    """TRL adds router_aux_loss_coef x the experts' load-balancing loss; ours dropped it (a silent change of the
    objective for MoE models). Step 1 (same weights, same batch): loss(coef) - loss(0) = coef x the logged aux_loss."""
    moe = save_tiny_model(tmp_path / "moe", arch="mixtral")
    with_aux = run(run_adadpo, moe, pref_jsonl, tmp_path / "aux", router_aux_loss_coef=0.5)
    without = run(run_adadpo, moe, pref_jsonl, tmp_path / "none", router_aux_loss_coef=0.0)
    first, plain = step_logs(with_aux)[0], step_logs(without)[0]
    assert first["aux_loss"] > 0 and "aux_loss" not in plain
    assert first["loss"] - plain["loss"] == pytest.approx(0.5 * first["aux_loss"], rel=1e-4)


def test_model_init_kwargs_reach_policy_and_reference(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    """TRL builds the reference from `model_init_kwargs`; the policy must be built from them too (it was not)."""
    trainer = run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "out",
                  model_init_kwargs='{"attn_implementation": "eager"}')  # fmt: skip
    policy, reference = (trainer.accelerator.unwrap_model(m) for m in (trainer.model, trainer.ref_model))
    assert get_attention_implementation(policy) == get_attention_implementation(reference) == "eager"
    assert get_attention_implementation(trainer.accelerator.unwrap_model(
        run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "default").model)) == "sdpa"  # fmt: skip
    with pytest.raises(ValueError, match="model_init_kwargs` and the model arguments disagree: dtype"):
        run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "clash", model_init_kwargs='{"dtype": "bfloat16"}')
    assert not (tmp_path / "clash").exists()


@pytest.mark.parametrize("padding_free", [False, True])
def test_pad_to_multiple_of_pads_shapes_and_changes_no_number(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, padding_free, monkeypatch
):
    from adadpo.training import trainer as trainer_module

    shapes = []
    original = trainer_module.sequence_logps

    def spy(model, batch, **kwargs):
        shapes.append(tuple(batch["input_ids"].shape))
        return original(model, batch, **kwargs)

    base = first_losses(run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "base", padding_free=padding_free))
    monkeypatch.setattr(trainer_module, "sequence_logps", spy)
    padded = run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "m", padding_free=padding_free,
                 pad_to_multiple_of=48)  # fmt: skip
    assert shapes and all(shape[-1] % 48 == 0 for shape in shapes)
    assert first_losses(padded) == pytest.approx(base, rel=1e-5, abs=1e-6)


def test_pad_token_pads_with_that_token_and_changes_no_number(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    base = run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "base")
    eos = base.processing_class.eos_token
    other = run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "eos", pad_token=eos)
    assert other.data_collator.pad_token_id == other.processing_class.convert_tokens_to_ids(eos)
    assert other.data_collator.pad_token_id != base.data_collator.pad_token_id
    assert first_losses(other) == pytest.approx(first_losses(base), rel=1e-6, abs=1e-7)


def test_truncation_mode_changes_what_is_trained(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    start = step_logs(run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "s", max_length=24))[0]
    end = step_logs(
        run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "e", max_length=24, truncation_mode="keep_end")
    )[0]
    assert start["logps/chosen"] != pytest.approx(end["logps/chosen"], rel=1e-3)


def test_do_eval_false_skips_the_final_evaluation(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "eval", test_split_size=4)
    run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "no-eval", test_split_size=4, do_eval=False)
    assert "eval_loss" in json.loads((tmp_path / "eval" / "all_results.json").read_text())
    assert "eval_loss" not in json.loads((tmp_path / "no-eval" / "all_results.json").read_text())
    # beside evaluations during training too (transformers turns `do_eval` on whenever `eval_strategy` is set)
    run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "steps", test_split_size=4, do_eval=False,
        eval_strategy="steps", eval_steps=1, max_steps=2)  # fmt: skip
    history = json.loads((tmp_path / "steps" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "eval_loss" in entry] == [1, 2]  # scheduled ones only


def test_sync_ref_model_moves_the_live_reference(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    """TR-DPO: with mixup alpha 1 and a sync every step, the reference becomes the policy after each step."""
    synced = run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "sync", sync_ref_model=True,
                 ref_model_sync_steps=1, ref_model_mixup_alpha=1.0)  # fmt: skip
    fixed = run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "fixed")
    for trainer, same in ((synced, True), (fixed, False)):
        policy = trainer.accelerator.unwrap_model(trainer.model).state_dict()
        reference = trainer.accelerator.unwrap_model(trainer.ref_model).state_dict()
        assert all(torch.equal(policy[k], reference[k]) for k in policy) == same


def test_model_init_kwargs_that_contradict_the_model_arguments_are_refused(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path
):
    with pytest.raises(ValueError, match="model_init_kwargs` and the model arguments disagree: dtype"):
        run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "clash", model_init_kwargs='{"dtype": "bfloat16"}')
    assert not (tmp_path / "clash").exists()


def test_max_prompt_length_keeps_each_prompts_end_and_rescues_long_prompts(run_adadpo, tiny_model_dir, tmp_path):
    """alignment-handbook's `max_prompt_length`: each prompt cut to its last N tokens, before TRL's filter drops the
    rows whose prompt fills `max_length` (so a long prompt the cut shortens is trained on, not dropped)."""
    from adadpo.files import write_jsonl_atomic
    from tests.helpers.runs import preference_rows_with_margin

    rows = preference_rows_with_margin(16, seed=8)
    for row in rows[:6]:
        row["prompt"][0]["content"] = " ".join(["mountain river"] * 40) + "?"  # far beyond max_length=64
    data = write_jsonl_atomic(tmp_path / "long.jsonl", rows)
    plain = run(run_adadpo, tiny_model_dir, data, tmp_path / "plain", max_drop_fraction=0.5)
    cut = run(run_adadpo, tiny_model_dir, data, tmp_path / "cut", max_prompt_length=16)
    assert len(plain.train_dataset) == 10 and len(cut.train_dataset) == 16
    prompts = cut.train_dataset["prompt_ids"]
    assert max(len(p) for p in prompts) == 16
    full = plain.processing_class.apply_chat_template(rows[0]["prompt"], tokenize=True, add_generation_prompt=True)
    assert prompts[0] == list(full["input_ids"])[-16:]  # the end of the prompt is kept


def test_overwrite_output_dir_starts_over_and_keeps_the_old_checkpoints(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path
):
    out = tmp_path / "out"
    run(run_adadpo, tiny_model_dir, pref_jsonl, out, save_strategy="steps", save_steps=2)
    again = run(run_adadpo, tiny_model_dir, pref_jsonl, out, save_strategy="steps", save_steps=2,
                overwrite_output_dir=True)  # fmt: skip
    assert [e["step"] for e in step_logs(again)] == [1, 2]  # trained from step 0, not resumed at 2
    (aside,) = (out / "previous-runs").iterdir()
    assert (aside / "checkpoint-2" / "model.safetensors").exists() and (out / "checkpoint-2").exists()
    counter = StepCounter()
    with extra_callbacks(counter):
        run(run_adadpo, tiny_model_dir, pref_jsonl, out, save_strategy="steps", save_steps=2, max_steps=3)
    assert counter.steps == [3]  # a plain relaunch resumes this run's checkpoint-2 and trains step 3 only


TRL_OPTION_RUNS = {
    "forward_kl": {"loss_type": "sigmoid", "f_divergence_type": "forward_kl"},
    "js_divergence": {"loss_type": "sigmoid", "f_divergence_type": "js_divergence"},
    "alpha_divergence_hinge": {
        "loss_type": "hinge",
        "f_divergence_type": "alpha_divergence",
        "f_alpha_divergence_coef": 0.3,
    },  # fmt: skip
    "robust_smoothing": {"loss_type": "robust", "label_smoothing": 0.2},
    "mpo_weights": {"loss_type": "sigmoid,bco_pair,sft", "loss_weights": ["0.8", "0.2", "1.0"]},
    "wpo": {"loss_type": "sigmoid", "use_weighting": True},
    "ld_alpha": {"loss_type": "ipo", "ld_alpha": 0.5},
}


@pytest.mark.parametrize("options", TRL_OPTION_RUNS.values(), ids=TRL_OPTION_RUNS.keys())
def test_a_run_with_trl_options_computes_trls_loss(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, options):
    """The options reach the loss through the whole script: after one step, our trainer's loss (and its gradient) on a
    batch equals TRL 1.16's `DPOTrainer._compute_loss` on the same trainer, model, reference and batch, with TRL's
    attributes set to the run's options (TRL's init saw its defaults for them)."""
    from trl import DPOTrainer

    lists = {key: value for key, value in options.items() if isinstance(value, list)}  # `--key a b c`
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "run", max_steps=1, save_strategy="no",
                         **{key: value for key, value in options.items() if key not in lists})  # fmt: skip
    trainer = train(run_adadpo, argv + [item for key, values in lists.items() for item in (f"--{key}", *values)])
    args = trainer.args
    trainer.loss_types, trainer.loss_weights = args.loss_names, args.loss_weights or [1.0] * len(args.loss_names)
    trainer.f_divergence_type, trainer.label_smoothing = args.f_divergence_type, args.label_smoothing
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    model = trainer.model
    model.eval()  # no dropout either way; the same mode for both

    def loss_and_grads(compute):
        model.zero_grad()
        loss = compute()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    ours, our_grads = loss_and_grads(lambda: trainer.compute_loss(model, dict(batch)))
    theirs, their_grads = loss_and_grads(lambda: DPOTrainer._compute_loss(trainer, model, dict(batch), False))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert len(our_grads) == len(their_grads) > 0
    for mine, trl in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(mine, trl, rtol=1e-4, atol=1e-6)


def test_an_ada_loss_under_an_f_divergence_trains_a_different_objective(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path
):
    """TRL's own init check refused every Ada- name with `f_divergence_type` (it knows only its names)."""
    plain = first_losses(run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "rkl", loss_type="adadpo"))
    js = first_losses(run(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path / "js", loss_type="adadpo",
                          f_divergence_type="js_divergence"))  # fmt: skip
    assert js[0] == pytest.approx(plain[0]) and abs(js[1] - plain[1]) > 1e-5  # equal at the reference, then apart


def test_neftune_with_a_peft_policy_needs_a_precomputed_reference(run_adadpo, tiny_model_dir, pref_jsonl, tmp_path):
    def argv(out, **extra):
        lora = {"loss_type": "dpo", "max_steps": 2, "save_strategy": "no", "use_peft": True, "lora_r": 4,
                "neftune_noise_alpha": 5.0}  # fmt: skip
        return tiny_run_args(tiny_model_dir, pref_jsonl, out, **lora, **extra) + [
            "--lora_target_modules",
            "q_proj",
            "v_proj",
        ]

    with pytest.raises(ValueError, match="NEFTune's embedding noise would reach the reference"):
        train(run_adadpo, argv(tmp_path / "live"))
    assert not (tmp_path / "live").exists()
    trainer = train(run_adadpo, argv(tmp_path / "pre", precompute_ref_log_probs=True))
    assert trainer.state.global_step == 2


def test_label_smoothing_on_dpo_says_it_differs_from_trl(tmp_path):
    from adadpo.recipe import parse_args

    argv = ["--model_name_or_path=m", "--dataset_name=d", f"--output_dir={tmp_path}", "--use_cpu=true",
            "--loss_type=sigmoid", "--label_smoothing=0.1"]  # fmt: skip
    with pytest.warns(UserWarning, match="conservative DPO .* TRL 1.16's own `sigmoid` ignores"):
        parse_args(argv)
