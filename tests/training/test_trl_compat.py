"""Each seam of `adadpo.training.trl_compat` against the installed TRL / transformers: if an upgrade renames, stops
calling or changes what we rely on, one of these fails and names the seam.

Seams covered elsewhere, end to end: `_save_checkpoint` + `_get_output_dir` (staged, all-or-nothing checkpoints:
`test_reliability_faults.py::test_crash_while_writing_a_checkpoint_keeps_the_previous_one`), `_load_rng_state`
(resume restores alpha-DPO's statistics: `...::test_sigkill_after_checkpoint_then_resume_equals_uninterrupted_run`).
"""

import inspect

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer
from trl import DPOTrainer
from trl.trainer import dpo_trainer as trl_dpo

from adadpo.config import AdaDPOConfig
from adadpo.training import trl_compat
from adadpo.training.trainer import AdaDPOTrainer
from tests.helpers.runs import preference_rows_with_margin


class Recorded(AdaDPOTrainer):
    """The real trainer, recording which public hooks TRL's private methods routed to."""

    def __init__(self, *args, **kwargs):
        self.calls = []
        super().__init__(*args, **kwargs)

    def compute_preference_loss(self, model, inputs, return_outputs):
        self.calls.append(("loss", sorted(inputs)))
        return super().compute_preference_loss(model, inputs, return_outputs)

    def check_tokenized_dataset(self, dataset, tokenized, split, tokenizer, args):
        self.calls.append(("tokenized", split, sorted(tokenized.column_names)))
        return super().check_tokenized_dataset(dataset, tokenized, split, tokenizer, args)

    def precompute_reference(self, dataset, split, batch_size):
        self.calls.append(("precompute", split))
        return super().precompute_reference(dataset, split, batch_size)


def build(tiny_model_dir, tmp_path, **config) -> Recorded:
    args = AdaDPOConfig(
        output_dir=str(tmp_path / "out"), max_length=64, per_device_train_batch_size=2, use_cpu=True, bf16=False,
        report_to="none", max_steps=1, save_strategy="no", logging_steps=1, **config,
    )  # fmt: skip
    rows = preference_rows_with_margin(6)
    return Recorded(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
        args=args,
        train_dataset=Dataset.from_list(rows[:4]),
        eval_dataset=Dataset.from_list(rows[4:]),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )


def test_trl_routes_tokenization_precompute_and_loss_through_our_hooks(tiny_model_dir, tmp_path):
    trainer = build(tiny_model_dir, tmp_path, loss_type="madpo", precompute_ref_log_probs=True)
    tokenized = [c for c in trainer.calls if c[0] == "tokenized"]
    # `_prepare_dataset`: once per split, after TRL's tokenization
    assert [c[1] for c in tokenized] == ["train", "eval"]
    assert all({"prompt_ids", "chosen_ids", "rejected_ids"} <= set(c[2]) for c in tokenized)
    # `_precompute_ref_logps`: once per split at the end of `__init__`
    assert [c[1] for c in trainer.calls if c[0] == "precompute"] == ["train", "eval"]
    assert trainer._precompute_engine is None  # TRL's attribute that `precompute_model` reuses under DeepSpeed
    trainer.train()
    # `_compute_loss`: TRL's `compute_loss` delegates to it; `_set_signature_columns_if_needed` keeps our columns
    [(_, batch_keys)] = [c for c in trainer.calls if c[0] == "loss"]
    assert {"reward_margin", "ref_chosen_logps", "ref_rejected_logps"} <= set(batch_keys)
    # `_metrics` / `_total_train_tokens`: what `log` averages and the `num_tokens` counter
    assert trainer.state.log_history[0]["num_tokens"] == trainer.total_train_tokens > 0
    assert trainer.padding_free is False and trainer.args.padding_free is False


def test_packing_flag_survives_trl_init_and_reference_free_losses_load_no_reference(tiny_model_dir, tmp_path):
    trainer = build(tiny_model_dir, tmp_path, loss_type="simpo", padding_free=True)
    assert trainer.args.padding_free is True and trainer.padding_free is True  # switched off only during TRL's init
    assert trainer.ref_model is None  # the reference loader was swapped out for TRL's init
    assert trl_dpo.create_model_from_path is trl_compat.trl_dpo.create_model_from_path  # and swapped back


@pytest.mark.parametrize("name", [trl_compat.TRL_REFERENCE_LOADER, trl_compat.TRL_WEIGHT_HASH])
def test_swapped_trl_functions_exist_and_are_called_by_dpo_trainer_init(name):
    assert callable(getattr(trl_dpo, name)), f"trl.trainer.dpo_trainer.{name} is gone"
    assert f"{name}(" in inspect.getsource(DPOTrainer.__init__), f"DPOTrainer.__init__ no longer calls {name}"


def test_swapping_a_missing_trl_function_is_refused_by_name():
    with pytest.raises(RuntimeError, match="no_such_function is gone"):
        with trl_compat._replaced(trl_dpo, "no_such_function", None):
            pass


@pytest.mark.parametrize(
    ("owner", "method", "caller"),
    [
        (DPOTrainer, "_compute_loss", DPOTrainer.compute_loss),
        (DPOTrainer, "_prepare_dataset", DPOTrainer.__init__),
        (DPOTrainer, "_precompute_ref_logps", DPOTrainer.__init__),
        (Trainer, "_get_output_dir", Trainer._save_checkpoint),
        (Trainer, "_load_rng_state", Trainer._run_epoch),
        (Trainer, "_save_checkpoint", Trainer._maybe_log_save_evaluate),
        (Trainer, "_prepare_inputs", Trainer.training_step),
        (Trainer, "_prepare_inputs", Trainer.prediction_step),
    ],
)
def test_private_methods_we_override_are_still_called_where_we_rely_on_it(owner, method, caller):
    assert hasattr(owner, method), f"{owner.__name__}.{method} is gone"
    assert f"self.{method}(" in inspect.getsource(caller), f"{caller.__qualname__} no longer calls {method}"


def test_num_tokens_counts_a_tensor_parallel_group_once(tiny_model_dir, tmp_path):
    """Tensor-parallel ranks hold the same batch, so the token count gathered over processes repeats it once per rank
    of the group; TRL divides by its `_tp_size`, and so must we (the `num_tokens` metric and its checkpointed total)."""
    counts = {}
    for tp_size in (1, 2):
        trainer = build(tiny_model_dir, tmp_path / f"tp{tp_size}", loss_type="dpo")
        trainer.args.max_steps = 2
        trainer._tp_size = tp_size  # what TRL reads from `accelerator.parallelism_config.tp_size`
        trainer.train()
        counts[tp_size] = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e]
    assert counts[1][0] > 0 and len(counts[1]) == len(counts[2]) == 2
    per_step_1 = [counts[1][0], counts[1][1] - counts[1][0]]
    per_step_2 = [counts[2][0], counts[2][1] - counts[2][0]]
    assert per_step_2 == [n // 2 for n in per_step_1]


def test_trl_keeps_the_tensor_parallel_size_it_divides_token_counts_by():
    source = inspect.getsource(DPOTrainer)
    assert "self._tp_size = self.accelerator.parallelism_config.tp_size" in source
    assert "// self._tp_size" in source


def test_the_trainer_pads_with_the_tokenizer_inside_a_processor(tiny_model_dir, tmp_path):
    """A multimodal model's `processing_class` is a processor wrapping its tokenizer: the trainer's collator pads
    with that tokenizer's pad id (reading `pad_token_id` off the processor raised AttributeError). The rows come
    tokenized: TRL 1.16 cannot tokenize text rows through a processor (its `common_prefix_length` gets nested ids)."""
    from transformers import ProcessorMixin

    class TextProcessor(ProcessorMixin):
        attributes = ["tokenizer"]
        tokenizer_class = "AutoTokenizer"

    class PreTokenized(AdaDPOTrainer):
        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [{"prompt_ids": [5, 6, 7], "chosen_ids": [8, 9, 2], "rejected_ids": [10, 2]} for _ in range(4)]
    for padding_free in (False, True):
        args = AdaDPOConfig(
            output_dir=str(tmp_path),
            use_cpu=True,
            bf16=False,
            report_to="none",
            max_length=32,
            loss_type="dpo",
            padding_free=padding_free,
            max_steps=1,
            save_strategy="no",
        )
        trainer = PreTokenized(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=TextProcessor(tokenizer),
        )
        assert trainer.data_collator.pad_token_id == tokenizer.pad_token_id
        trainer.train()  # and it trains on those rows


def test_a_trainer_built_directly_keeps_the_global_batch(tiny_model_dir, tmp_path):
    """`global_batch_size` holds however the trainer is built (a library user, the benches), not only through
    `build_trainer`: the accumulation is derived when the trainer is made."""
    trainer = build(tiny_model_dir, tmp_path, loss_type="dpo", global_batch_size=8)
    assert trainer.args.gradient_accumulation_steps == 4  # 8 pairs / (1 process x 2 per device)


def test_trl_drops_long_prompts_by_reading_max_length_alone():
    """`_prepare_dataset` switches TRL's filter off by unsetting `args.max_length` for the call (our hook cuts prompts
    to `max_prompt_length` first, then filters): TRL's filter must read nothing else."""
    source = inspect.getsource(DPOTrainer._prepare_dataset)
    assert 'if args.max_length is not None and args.truncation_mode == "keep_start":' in source
    assert 'len(example["prompt_ids"]) < args.max_length' in source


def test_per_pair_columns_keep_their_dtype_when_deepspeed_casts_the_batch(tiny_model_dir, tmp_path, monkeypatch):
    """transformers' `_prepare_inputs` casts every float tensor of a batch to DeepSpeed's dtype (bf16): the seam keeps
    the precomputed reference log-probs in fp32 (-401.3 would become -402 in bf16), and casts the rest as before."""
    from types import SimpleNamespace

    import accelerate

    trainer = build(tiny_model_dir, tmp_path)
    monkeypatch.setattr(trainer, "is_deepspeed_enabled", True)
    bf16_engine = SimpleNamespace(hf_ds_config=SimpleNamespace(dtype=lambda: torch.bfloat16))
    monkeypatch.setattr(accelerate.state.AcceleratorState, "deepspeed_plugin", property(lambda self: bf16_engine))
    batch = {"ref_chosen_logps": torch.tensor([-401.3]), "reward_margin": torch.tensor([0.123]),
             "other_floats": torch.tensor([-401.3]), "input_ids": torch.tensor([[1, 2]])}  # fmt: skip
    prepared = trainer._prepare_inputs(batch)
    assert prepared["ref_chosen_logps"].dtype == torch.float32
    assert torch.equal(prepared["ref_chosen_logps"], batch["ref_chosen_logps"])
    assert prepared["reward_margin"].dtype == torch.float32
    assert prepared["other_floats"].dtype == torch.bfloat16  # transformers' cast, for everything else
    assert prepared["input_ids"].dtype == torch.long
