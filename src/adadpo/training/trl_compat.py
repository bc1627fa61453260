"""Every use of a private API of TRL or transformers, in one place.

`TRLCompatTrainer` overrides the private methods of TRL's `DPOTrainer` and transformers' `Trainer` and owns the
toggles; `AdaDPOTrainer` subclasses it and implements only the public hooks at the top. The functions below it are
the other seams: TRL helpers that live in its private modules (`trl.trainer.*`, `trl.models.*`), the fused LM head
TRL patches into the model, and transformers' attention-implementation attribute. Each seam says which behaviour it
relies on; `trl` is pinned to the minor we test (1.16), `tests/training/test_trl_compat.py` fails, naming the seam,
if an upgrade changes one, and `tests/test_architecture.py` fails if a module outside this one reaches past it.
"""

import contextlib
import os

import torch
from accelerate.utils import DeepSpeedPlugin
from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig
from trl import DPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer import dpo_trainer as trl_dpo
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import add_fused_lm_head, use_adapter

from adadpo.training.checkpointing import atomic_checkpoint, checkpoint_dir
from adadpo.training.models import tokenizer_of


__all__ = [
    "DataCollatorForPreference",  # TRL's padded preference collator (not exported at `trl`'s top level)
    "add_fused_lm_head",  # TRL's fused LM head, for a model used without DPOTrainer (benchmarks): see fused_forward
    "TRLCompatTrainer",
    "attention_implementation",
    "disable_gradient_checkpointing",  # no grad-checkpointing recompute in a no-grad reference forward
    "backward_as_training_step",
    "fused_forward",
    "fused_output",
    "get_attention_implementation",
    "gradient_sync_paused",
    "refresh_deepspeed_config",
    "use_adapter",  # PEFT: the reference is the policy with its adapter off (or TRL's frozen `ref` adapter on)
    "wrap_sequence_parallel_dataloader",
]


# TRL's module-level functions that `DPOTrainer.__init__` calls; swapped out for the duration of that call only.
TRL_REFERENCE_LOADER = "create_model_from_path"  # loads the reference copy when `ref_model` is None
TRL_WEIGHT_HASH = "hash_module"  # hashes every weight (16 GB for an 8B model) for TRL's own precompute cache


@contextlib.contextmanager
def _replaced(module, name: str, replacement):
    """`module.name = replacement` inside the block. The seam: `DPOTrainer.__init__` looks these names up in its
    module's globals at call time, and neither has a constructor argument or an overridable method."""
    if not hasattr(module, name):
        raise RuntimeError(f"trl.trainer.dpo_trainer.{name} is gone: this TRL is not the one adadpo supports (1.16)")
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


class TRLCompatTrainer(DPOTrainer):
    """`DPOTrainer` with its private methods routed to public hooks and its init toggles explicit."""

    # TRL 1.16: `DPOTrainer.__init__` adds `_tag_names` to the model's Hub tags; `_name` names the method in its logs.
    _tag_names = ["trl", "adadpo"]
    _name = "AdaDPO"

    # ---- Hooks for subclasses ------------------------------------------------------------------------------------

    def compute_preference_loss(self, model, inputs, return_outputs: bool):
        """The loss of one micro-batch (what TRL's `_compute_loss` computes)."""
        raise NotImplementedError

    def check_tokenized_dataset(self, dataset, tokenized, split: str, tokenizer, args):
        """Checks after TRL's tokenization (`dataset` before, `tokenized` after); returns the dataset to train on.
        Runs inside TRL's `__init__`, before transformers' `Trainer.__init__` sets `processing_class` and `args`."""
        return tokenized

    def precompute_reference(self, dataset, split: str, batch_size: int):
        """Reference log-probs of a whole split as columns; None lets TRL compute them."""
        return None

    def extra_pair_columns(self) -> tuple[str, ...]:
        """Dataset columns the collator needs beyond TRL's (TRL drops unused columns before collation)."""
        return ()

    def before_checkpoint(self) -> None:
        """Checks before a checkpoint is written (e.g. refuse non-finite weights)."""

    def save_extra_state(self, folder: str) -> None:
        """Write what resume needs beyond transformers' checkpoint into the (staged) checkpoint folder."""

    def after_checkpoint(self, folder: str) -> None:
        """The checkpoint is complete on every process and renamed into place as `folder`."""

    def load_extra_state(self, checkpoint: str) -> None:
        """Restore what `save_extra_state` wrote."""

    # ---- Construction ----------------------------------------------------------------------------------------------

    def __init__(self, model, ref_model, args, *, load_reference: bool, trl_hash: bool, **kwargs):
        """`load_reference=False`: no reference model is loaded (reference-free losses). `trl_hash=False`: skip TRL's
        full-weight hash (only its own precompute cache uses it). TRL's `padding_free` is a no-op that warns (ours is
        implemented by our collator and `sequence_logps`), so TRL sees it off during its init. TRL's init also checks
        `loss_type` and `f_divergence_type` for its own loss code (by TRL names, so it refuses every Ada- name and
        reads a one-name list as its characters); `adadpo.losses` replaces that code and checks its own combinations,
        so TRL sees its defaults there."""
        own_options = {"padding_free": False, "loss_type": ["sigmoid"], "f_divergence_type": "reverse_kl"}
        saved = {name: getattr(args, name) for name in own_options}
        for name, value in own_options.items():
            setattr(args, name, value)
        self._checkpoint_root = None  # see `checkpoints_written_to`
        try:
            with contextlib.ExitStack() as stack:
                if not load_reference:
                    stack.enter_context(_replaced(trl_dpo, TRL_REFERENCE_LOADER, lambda *a, **k: None))
                if not trl_hash:
                    stack.enter_context(_replaced(trl_dpo, TRL_WEIGHT_HASH, lambda module: "adadpo-ref-cache"))
                super().__init__(model, ref_model=ref_model, args=args, **kwargs)
        finally:
            for name, value in saved.items():
                setattr(args, name, value)
        self.padding_free = saved["padding_free"]  # TRL's init sets it from the (switched-off) argument

    # ---- TRL: DPOTrainer private methods ---------------------------------------------------------------------------

    def _compute_loss(self, model, inputs, return_outputs):
        # TRL 1.16: `compute_loss` delegates the whole loss computation to `_compute_loss(model, inputs,
        # return_outputs)`, in training and (through `prediction_step`) in evaluation.
        return self.compute_preference_loss(model, inputs, return_outputs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        # TRL 1.16: called once per split in `__init__`; extracts implicit prompts, tokenizes into
        # prompt_ids/chosen_ids/rejected_ids and drops rows whose prompt fills `max_length`. That filter is switched
        # off here (it reads only `args.max_length`): the hook cuts prompts to `max_prompt_length` first, then filters.
        max_length, args.max_length = args.max_length, None
        try:
            tokenized = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        finally:
            args.max_length = max_length
        tokenizer = tokenizer_of(processing_class)
        return self.check_tokenized_dataset(dataset, tokenized, dataset_name, tokenizer, args)

    def _set_signature_columns_if_needed(self):
        # TRL 1.16: `_signature_columns` lists the columns `remove_unused_columns` keeps.
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *self.extra_pair_columns()]))

    def _precompute_ref_logps(self, dataset, name, batch_size):
        # TRL 1.16: with `precompute_ref_log_probs`, called per split at the end of `__init__` (and by `evaluate`);
        # returns the dataset with `ref_chosen_logps`/`ref_rejected_logps` columns.
        computed = self.precompute_reference(dataset, name, batch_size)
        return super()._precompute_ref_logps(dataset, name, batch_size) if computed is None else computed

    def precompute_model(self):
        """The model that computes precomputed reference log-probs: the reference, or the untrained policy. Under
        DeepSpeed the policy is not prepared until `train` (ZeRO shards or offloads it): TRL 1.16 wraps it once in an
        inference engine kept in `_precompute_engine`; reuse that, built the same way."""
        if self.ref_model is None and self.is_deepspeed_enabled:
            if self._precompute_engine is None:
                self._precompute_engine = trl_dpo.prepare_deepspeed(self.model, self.accelerator)
            return self._precompute_engine
        return self.ref_model or self.model

    # ---- TRL: private state read by our metrics --------------------------------------------------------------------

    def set_logged_metric(self, mode: str, key: str, value: float) -> None:
        # TRL 1.16: `log` averages each list in `_metrics[mode]` into the logs, then clears them.
        self._metrics[mode][key] = [value]

    def add_logged_metric(self, mode: str, key: str, value: float) -> None:
        """One more value of `key` since the last log (TRL averages them, as it does for its own aux_loss)."""
        self._metrics[mode][key].append(value)

    @property
    def total_train_tokens(self) -> int:
        # TRL 1.16: `_total_train_tokens`, the running count behind the `num_tokens` metric.
        return self._total_train_tokens

    @total_train_tokens.setter
    def total_train_tokens(self, value: int) -> None:
        self._total_train_tokens = value

    @property
    def tensor_parallel_size(self) -> int:
        # TRL 1.16: `_tp_size`, the tensor-parallel group size it divides gathered token counts by (1 without TP).
        return self._tp_size

    # ---- transformers: Trainer private methods -----------------------------------------------------------------

    def _prepare_inputs(self, inputs):
        # transformers: `_prepare_inputs` moves a batch to the device and, under DeepSpeed, casts every floating tensor
        # to the engine's dtype. Summed reference log-probs of -400 in bf16 are off by up to 2 nats; the per-pair
        # columns (`extra_pair_columns`: reference log-probs, reward margins) move without a cast.
        columns = {k: v for k, v in inputs.items() if k in self.extra_pair_columns() and isinstance(v, torch.Tensor)}
        prepared = super()._prepare_inputs({k: v for k, v in inputs.items() if k not in columns})
        return prepared | {k: v.to(self.args.device) for k, v in columns.items()}

    def _get_output_dir(self, trial):
        # transformers: `_save_checkpoint` writes `checkpoint-N` under `_get_output_dir(trial)`. Inside
        # `checkpoints_written_to(root)` that is `root`, a staging folder.
        return self._checkpoint_root or super()._get_output_dir(trial=trial)

    @contextlib.contextmanager
    def checkpoints_written_to(self, root: str):
        """Inside the block, transformers' `_save_checkpoint` writes `checkpoint-N` under `root` instead of the run
        folder (`adadpo.training.checkpointing.atomic_checkpoint` stages it there and renames it when complete)."""
        self._checkpoint_root = root
        try:
            yield
        finally:
            self._checkpoint_root = None

    def run_dir(self, trial=None) -> str:
        """The run folder checkpoints are renamed into (never the staging folder)."""
        return super()._get_output_dir(trial=trial)

    def _save_checkpoint(self, model, trial):
        # transformers: writes model, optimizer, scheduler, RNG and trainer state into `checkpoint-N` (TRL 1.16 adds
        # a model card); called on every process.
        self.before_checkpoint()
        with atomic_checkpoint(self, trial) as folder:  # written to a staging folder, renamed once complete
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                self.save_extra_state(folder)
        self.after_checkpoint(checkpoint_dir(self, trial))

    def save_checkpoint_now(self) -> None:
        """A checkpoint of the current step outside transformers' save schedule (a stop signal at a step
        `save_strategy: best` skipped): `_save_checkpoint` is transformers' own save, staged by the override above."""
        self._save_checkpoint(self.model_wrapped, trial=None)

    def _load_rng_state(self, checkpoint):
        # transformers: called once when training resumes from `checkpoint` (skipped with `ignore_data_skip`).
        super()._load_rng_state(checkpoint)
        if checkpoint is not None and os.path.isdir(checkpoint):
            self.load_extra_state(checkpoint)


# ---- transformers / accelerate: one more backward inside a micro-step (adadpo.training.oom) ----------------------


def backward_as_training_step(trainer, loss, num_items_in_batch=None) -> None:
    """Backpropagate `loss` exactly as transformers' `Trainer.training_step` backpropagates a micro-batch's loss:
    divided by the accumulation steps unless transformers deems it scaled already, and under DeepSpeed with the
    engine's own scaling off (transformers 5 divides instead). The same attributes, read the same way."""
    scaled = trainer.loss_is_scaled_for_ga
    if scaled is None:
        scaled = (trainer.model_accepts_loss_kwargs and num_items_in_batch is not None) or (
            trainer.compute_loss_func is not None
        )
    if trainer.args.n_gpu > 1:
        loss = loss.mean()
    if not scaled:
        loss = loss / trainer.current_gradient_accumulation_steps
    kwargs = {"scale_wrt_gas": False} if trainer.is_deepspeed_enabled else {}
    trainer.accelerator.backward(loss, **kwargs)


@contextlib.contextmanager
def gradient_sync_paused(accelerator):
    """For DeepSpeed, a backward that marks no accumulation boundary (accelerate then skips `engine.step`): accelerate
    keeps that flag in `GradientState` behind a private setter. DDP is left syncing: its reducer keeps the state of a
    synced forward that was abandoned (the agreed split), so a `no_sync` backward after it would still all-reduce on
    that process alone; a synced backward per part instead all-reduces on every process, and averaging gradients that
    are already equal across processes changes nothing."""
    state = accelerator.gradient_state
    was = state.sync_gradients
    state._set_sync_gradients(False)
    try:
        yield
    finally:
        state._set_sync_gradients(was)


# ---- TRL: the fused LM head ------------------------------------------------------------------------------------------


def fused_forward(model, **inputs):
    """One forward through TRL's fused LM head: per-token log-probs of the labels without the (tokens x vocab)
    logits. TRL 1.16's `DPOTrainer.__init__` patches the policy and reference with `add_fused_lm_head`: called with
    `fused_lm_head=True` and `labels` / `shift_labels`, the model returns them as `outputs.log_probs` (and, for the
    policy, the outputs TRL asked for: `log_sum_sq_probs` with `use_weighting`)."""
    outputs = model(**inputs, fused_lm_head=True, use_cache=False)
    fused_output(outputs, "log_probs")
    return outputs


def fused_output(outputs, name: str):
    """`outputs.<name>` of the fused head, or an error saying how to get it."""
    value = getattr(outputs, name, None)
    if value is None:
        raise RuntimeError(
            f"The model returned no `{name}`: patch it once with `trl.trainer.utils.add_fused_lm_head(model, "
            f"outputs=(..., {name!r}))` (on the base model, before wrapping it with PEFT) before calling "
            "`sequence_logps`; TRL's DPOTrainer does it for its own options (`use_weighting` adds log_sum_sq_probs)."
        )
    return value


# ---- transformers: the attention implementation --------------------------------------------------------------------


def get_attention_implementation(model) -> str | None:
    """The attention kernel `model` runs (`sdpa`, `flash_attention_2`, ...). transformers 5 keeps it in
    `config._attn_implementation`, read by every decoder layer and mask builder at each forward."""
    return model.config._attn_implementation


@contextlib.contextmanager
def attention_implementation(model, name: str):
    """Run `model` with another attention implementation inside the block. Setting `config._attn_implementation`
    switches the kernel without reloading, and without `set_attn_implementation`'s availability checks (which
    refuse flash on a machine without it, e.g. the CPU emulation of the tests)."""
    config = model.config
    original = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = original


# ---- transformers: a DeepSpeed config given in the training arguments ------------------------------------------------


def refresh_deepspeed_config(args) -> None:
    """After a change to `args` (our derived `gradient_accumulation_steps`), rebuild the DeepSpeed config that
    transformers' `TrainingArguments.__post_init__` filled from `args` when the recipe sets `deepspeed:` (its "auto"
    entries are filled once; `Trainer` would then see a mismatch). Launches through an accelerate DeepSpeed config
    have no such copy: `Trainer.__init__` fills theirs from `args`, so nothing is done."""
    if not getattr(args, "deepspeed", None):
        return
    args.hf_deepspeed_config = HfTrainerDeepSpeedConfig(args.deepspeed)
    args.hf_deepspeed_config.trainer_config_process(args)
    args.deepspeed_plugin = DeepSpeedPlugin(hf_ds_config=args.hf_deepspeed_config)


# ---- accelerate: the training dataloader under sequence parallelism -------------------------------------------------


def wrap_sequence_parallel_dataloader(accelerator, wrap) -> None:
    """transformers' training loop (5.x `_inner_training_loop`) wraps the prepared training dataloader in DeepSpeed's
    `UlyssesSPDataLoaderAdapter` through `accelerator.deepspeed_ulysses_dl_adapter(dataloader, model)`, after
    preparing the model; `wrap` is applied to what that returns. The seam: an instance attribute shadows the method
    for this accelerator only."""
    adapter = accelerator.deepspeed_ulysses_dl_adapter
    accelerator.deepspeed_ulysses_dl_adapter = lambda dataloader, model: wrap(adapter(dataloader, model))
