"""`AdaDPOTrainer`: TRL's `DPOTrainer` with the loss picked by name from `adadpo.losses`.

TRL keeps doing the tokenization, collation, chat templates, reference precompute, PEFT handling and logging. This
class only turns a batch into summed log-probs and completion lengths (`adadpo.logps`), hands them to
`preference_loss`, and logs what the loss reports. It holds no loss math.
"""

import contextlib
import logging
import os
from types import SimpleNamespace
from unittest import mock

import torch
from accelerate.utils import is_peft_model
from trl import DPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer import dpo_trainer as trl_dpo
from trl.trainer.utils import use_adapter

from adadpo.checkpoint_state import load_extra_state, save_extra_state
from adadpo.configs import AdaDPOConfig
from adadpo.data import check_drop_fraction, drop_double_bos
from adadpo.hub import write_model_card
from adadpo.hub_checkpoints import CheckpointPusher
from adadpo.logps import sequence_logps
from adadpo.losses import LOSS_SPECS, AlphaMarginNormalizer, preference_loss
from adadpo.nonfinite import NonFiniteGuard
from adadpo.packing import (
    PAIR_COLUMNS,
    DataCollatorForPackedPreference,
    PreferenceCollator,
    check_packing_supported,
)
from adadpo.ref_cache import ReferenceLogpsCache
from adadpo.run_utils import atomic_checkpoint, checkpoint_dir


logger = logging.getLogger(__name__)
LOGGED_LOSS_METRICS = (
    "beta_w",
    "clipped",
    "grad_balance",
    "log_grad_balance",
    "token_grad_balance",
)  # gathered every step


@contextlib.contextmanager
def _no_reference_model():
    """Reference-free losses: DPOTrainer would load a reference copy of the policy; make that load a no-op."""
    with mock.patch.object(trl_dpo, "create_model_from_path", side_effect=lambda *args, **kwargs: None):
        yield


class AdaDPOTrainer(DPOTrainer):
    _tag_names = ["trl", "adadpo"]
    _name = "AdaDPO"

    def __init__(
        self,
        model,
        ref_model=None,
        args: AdaDPOConfig | None = None,
        *,
        max_drop_fraction: float = 0.5,
        launch_command: str | None = None,
        dataset_names: list[str] | None = None,
        hub_pusher: CheckpointPusher | None = None,
        **kwargs,
    ):
        if args is None or not isinstance(args, AdaDPOConfig):
            raise TypeError("AdaDPOTrainer needs an `AdaDPOConfig` as `args`.")
        if isinstance(model, str):
            raise TypeError("Pass a loaded model (see `adadpo.model_utils.get_model`), not a path.")
        self.loss_spec = LOSS_SPECS[args.loss_type]
        self.max_drop_fraction = max_drop_fraction
        self.launch_command = launch_command
        self.dataset_names = dataset_names or []
        self.hub_pusher = hub_pusher  # pushes each checkpoint once renamed into place (`hub_strategy`)
        self.margin_normalizer = (
            AlphaMarginNormalizer(momentum=args.alpha_dpo_momentum) if self.loss_spec.needs_margin_normalizer else None
        )
        packing = args.padding_free
        if packing:
            check_packing_supported(model.config._attn_implementation)
        if kwargs.get("data_collator") is None:
            tokenizer = kwargs.get("processing_class")
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            collator_cls = DataCollatorForPackedPreference if packing else PreferenceCollator
            collator_kwargs = {"max_tokens_per_batch": args.max_tokens_per_batch} if packing else {}
            kwargs["data_collator"] = collator_cls(
                pad_token_id=pad_id,
                max_length=args.max_length,
                truncation_mode=args.truncation_mode,
                **collator_kwargs,
            )
        # TRL's own `padding_free` is a no-op that warns; ours is implemented by the collator and `sequence_logps`.
        args.padding_free = False
        self.ref_cache = ReferenceLogpsCache.from_args(args) if self.loss_spec.needs_reference else None
        try:
            with contextlib.ExitStack() as stack:
                if not self.loss_spec.needs_reference:
                    stack.enter_context(_no_reference_model())
                if self.ref_cache is not None:  # our cache keys on a cheap fingerprint; skip TRL's full-weight hash
                    stack.enter_context(mock.patch.object(trl_dpo, "hash_module", return_value="adadpo-ref-cache"))
                super().__init__(model, ref_model=ref_model, args=args, **kwargs)
        finally:
            args.padding_free = packing
        self.padding_free = packing
        self.nonfinite_guard = NonFiniteGuard(args.max_nonfinite_steps)
        self._pair_buffer = {"train": [], "eval": []}  # gathered per-pair values since the last log

    # ---- Data ---------------------------------------------------------------------------------------------------

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        before = len(dataset) if hasattr(dataset, "__len__") else None
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if before is not None and "prompt_ids" in dataset.column_names:
            check_drop_fraction(
                before,
                len(dataset),
                dataset_name,
                dataset_name,
                f"prompt of >= max_length={args.max_length} tokens",
                self.max_drop_fraction,
            )
            dataset = drop_double_bos(dataset, self._tokenizer.bos_token_id)
        if self.loss_spec.needs_reward_margin and "reward_margin" not in dataset.column_names:
            from adadpo.data import add_reward_margin

            dataset = add_reward_margin(dataset)
        return dataset

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *PAIR_COLUMNS]))

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if self.ref_cache is None:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        return self.ref_cache.get_or_compute(self, dataset, name, batch_size)

    # ---- Log-probs ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reference_context(self):
        """No grad, no checkpointing, and for PEFT the adapter off (or the frozen `ref` adapter on)."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs))
            if self.ref_model is None and is_peft_model(self.model):
                unwrapped = self.accelerator.unwrap_model(self.model)
                stack.enter_context(use_adapter(unwrapped, "ref" if "ref" in unwrapped.peft_config else None))
            yield

    def _precompute_model(self):
        """The model that computes precomputed reference log-probs: the reference, or the untrained policy."""
        if self.ref_model is None and self.is_deepspeed_enabled:
            if self._precompute_engine is None:  # ZeRO shards/offloads the policy before `train`: gather it once
                self._precompute_engine = trl_dpo.prepare_deepspeed(self.model, self.accelerator)
            return self._precompute_engine
        return self.ref_model or self.model

    def compute_ref_log_probs(self, model, inputs):
        """Reference log-probs of one batch (TRL's precompute calls this); packed batches work too."""
        with self._reference_context(), self.accelerator.autocast():
            return sequence_logps(model, inputs).logps.chunk(2, dim=0)

    def _reference_logps(self, inputs):
        if "ref_chosen_logps" in inputs:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        with self._reference_context():
            return sequence_logps(self.ref_model or self.model, inputs).logps.chunk(2, dim=0)

    # ---- Loss ---------------------------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        policy = sequence_logps(model, inputs)
        chosen_logps, rejected_logps = policy.logps.chunk(2, dim=0)
        chosen_lengths, rejected_lengths = policy.lengths.chunk(2, dim=0)
        ref_chosen_logps = ref_rejected_logps = None
        if self.loss_spec.needs_reference:
            ref_chosen_logps, ref_rejected_logps = self._reference_logps(inputs)
        normalizer = self.margin_normalizer
        if normalizer is not None:
            normalizer.gather = self.accelerator.gather
            normalizer.update = mode == "train"
        out = preference_loss(
            self.args.loss_type,
            policy_chosen_logps=chosen_logps,
            policy_rejected_logps=rejected_logps,
            chosen_lengths=chosen_lengths,
            rejected_lengths=rejected_lengths,
            ref_chosen_logps=ref_chosen_logps,
            ref_rejected_logps=ref_rejected_logps,
            reward_margins=inputs.get("reward_margin"),
            margin_normalizer=normalizer,
            **self.args.loss_hparams,
        )
        loss = out.losses.mean()
        self._log_pair_metrics(mode, out, policy, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
        if return_outputs:  # Trainer's prediction_step reads `.logits`: expose the rewards there
            return loss, SimpleNamespace(logits=torch.stack([out.chosen_rewards, out.rejected_rewards], dim=1))
        return loss

    # ---- Metrics ------------------------------------------------------------------------------------------------

    def _log_pair_metrics(self, mode, out, policy, chosen_logps, rejected_logps, ref_chosen, ref_rejected):
        """Gather this micro-batch's per-pair values; `log` summarises every pair since the last log at once, so a
        median, min or max covers the whole optimizer step (or eval set), however it is split into micro-batches."""
        gather = self.accelerator.gather_for_metrics
        per_pair = {
            "chosen_rewards": out.chosen_rewards,
            "rejected_rewards": out.rejected_rewards,
            "chosen_logps": chosen_logps.detach(),
            "rejected_logps": rejected_logps.detach(),
            "chosen_lengths": policy.lengths.chunk(2)[0].float(),
            "rejected_lengths": policy.lengths.chunk(2)[1].float(),
            **{k: out.metrics[k].detach().float() for k in LOGGED_LOSS_METRICS if k in out.metrics},
        }
        if ref_chosen is not None:
            per_pair["ref_chosen_logps"] = ref_chosen.detach().float()
            per_pair["ref_rejected_logps"] = ref_rejected.detach().float()
        self._pair_buffer[mode].append({k: gather(v.float()).cpu() for k, v in per_pair.items()})
        if mode == "train":
            self._total_train_tokens += int(gather(policy.num_tokens.reshape(1)).sum().item())
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    def _summarise_pair_metrics(self, mode: str) -> None:
        from adadpo.metrics import pair_metrics

        buffered, self._pair_buffer[mode] = self._pair_buffer[mode], []
        if not buffered:
            return
        pairs = {key: torch.cat([batch[key] for batch in buffered]) for key in buffered[0]}
        metrics = pair_metrics(pairs, beta=self.args.beta)
        if mode == "train":  # pairs per optimizer step over all processes (the global batch)
            metrics["batch/pairs"] *= self.args.gradient_accumulation_steps / len(buffered)
        for key, value in metrics.items():
            self._metrics[mode][key] = [value]

    def log(self, logs, start_time=None):
        if self.model.training and "loss" in logs:  # read after the optimizer step, so a skipped step counts itself
            self._metrics["train"]["nonfinite_steps"] = [self.nonfinite_guard.total_skipped]
        self._summarise_pair_metrics("train" if self.model.training else "eval")
        super().log(logs, start_time)

    # ---- Optimizer guard, checkpoints, model card ----------------------------------------------------------------

    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        self.nonfinite_guard.wrap(optimizer, self.accelerator)
        return optimizer

    def _save_checkpoint(self, model, trial):
        self.nonfinite_guard.check_weights_finite(self.model)
        with atomic_checkpoint(self, trial) as folder:  # written to a staging folder, renamed once complete
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                save_extra_state(self, folder)
        if self.hub_pusher is not None and self.is_world_process_zero():  # complete on every rank by now
            self.hub_pusher.push(self, checkpoint_dir(self, trial))

    def _load_rng_state(self, checkpoint):
        """Resume also restores what `_save_checkpoint` adds: alpha-DPO's normalizer and the running counters."""
        super()._load_rng_state(checkpoint)
        load_extra_state(self, checkpoint)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        if not self.is_world_process_zero():
            return
        write_model_card(self, os.path.join(self.args.output_dir, "README.md"))
