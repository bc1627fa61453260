"""`AdaDPOTrainer`: TRL's `DPOTrainer` with the loss picked by name from `adadpo.losses`.

TRL keeps doing the tokenization, collation, chat templates, reference precompute, PEFT handling and logging. This
class only turns a batch into summed log-probs and completion lengths (`adadpo.training.logps`), hands them to
`preference_loss`, and logs what the loss reports. It holds no loss math.
"""

import collections
import contextlib
import logging
import os
from types import SimpleNamespace

import torch
from accelerate.utils import is_peft_model, send_to_device

from adadpo.config import AdaDPOConfig, parse_signal_names
from adadpo.data_checks import check_tokenized
from adadpo.losses import PreferenceLoss
from adadpo.training.agreement import any_process
from adadpo.training.checkpointing import load_extra_state, save_extra_state
from adadpo.training.collators import (
    EXAMPLES_KEY,
    PAIR_COLUMNS,
    PairExamples,
    preference_collator,
    without_examples,
)
from adadpo.training.launch_checks import apply_launch
from adadpo.training.logps import sequence_logps
from adadpo.training.metrics import pair_metrics
from adadpo.training.model_card import write_model_card
from adadpo.training.models import tokenizer_of
from adadpo.training.nonfinite import NonFiniteGuard
from adadpo.training.oom import (
    MicroBatchSplitter,
    OutOfMemoryStop,
    agreed_failure,
    attempt,
    joined_parts,
    pair_slices,
    release_memory,
    resplit_unavailable,
    stop_message,
)
from adadpo.training.packing import check_packed_model
from adadpo.training.preemption import StopOnSignal
from adadpo.training.ref_cache import ReferenceLogpsCache
from adadpo.training.sequence_parallel import (
    EpochSlices,
    LaunchParallelism,
    SequenceParallelGroup,
    attention_over_group,
    check_model,
    check_same_attention,
    check_tensor_parallel,
    fixed_row_length,
    is_sharded,
    parallelism_config,
    start_deepspeed_comm,
    with_pair_columns,
)
from adadpo.training.trl_compat import (
    TRLCompatTrainer,
    backward_as_training_step,
    disable_gradient_checkpointing,
    get_attention_implementation,
    gradient_sync_paused,
    use_adapter,
    wrap_sequence_parallel_dataloader,
)


logger = logging.getLogger(__name__)


class AdaDPOTrainer(TRLCompatTrainer):
    def __init__(
        self,
        model,
        ref_model=None,
        args: AdaDPOConfig | None = None,
        *,
        max_drop_fraction: float = 0.5,
        launch_command: str | None = None,
        dataset_names: list[str] | None = None,
        hub_pusher=None,
        **kwargs,
    ):
        if args is None or not isinstance(args, AdaDPOConfig):
            raise TypeError("AdaDPOTrainer needs an `AdaDPOConfig` as `args`.")
        if isinstance(model, str):
            raise TypeError("Pass a loaded model (see `adadpo.training.models.get_model`), not a path.")
        apply_launch(args)  # also for trainers built without `build_trainer`: `global_batch_size` always holds
        self.loss_fn = PreferenceLoss.from_config(args)  # built once: validated hyperparameters and state
        self.max_drop_fraction = max_drop_fraction
        self.launch_command = launch_command
        self.dataset_names = dataset_names or []
        self.hub_pusher = hub_pusher  # pushes each checkpoint once renamed into place (`hub_strategy`)
        if args.padding_free:  # checked once, before anything runs
            check_packed_model(model, kwargs.get("peft_config"))
        peft = kwargs.get("peft_config") is not None or is_peft_model(model)
        live_reference = self.loss_fn.needs_reference and not (
            args.precompute_ref_log_probs or args.ref_logps_cache_dir
        )
        if args.neftune_noise_alpha and peft and ref_model is None and live_reference:
            raise ValueError(
                "`neftune_noise_alpha` with a PEFT policy: the live reference is the same model with its adapter off, "
                "so NEFTune's embedding noise would reach the reference log-probs too. Set "
                "`precompute_ref_log_probs: true` (computed once before training, without noise) or drop NEFTune."
            )
        # Sequence parallelism (accelerate's launch config): checked against the model, then handed to accelerate
        self.parallelism = LaunchParallelism.from_environ()
        check_model(self.parallelism, model.config, get_attention_implementation(model))
        if self.parallelism.enabled and ref_model is not None:  # DeepSpeed wraps one kernel: the policy's
            check_same_attention(get_attention_implementation(model), get_attention_implementation(ref_model))
        check_tensor_parallel(model)
        if self.parallelism.enabled:
            args.parallelism_config = parallelism_config(self.parallelism, get_attention_implementation(model))
            start_deepspeed_comm()
        self._sequence_parallel_group = None  # DeepSpeed builds it when accelerate prepares the model
        if kwargs.get("data_collator") is None:
            kwargs["data_collator"] = preference_collator(
                args,
                tokenizer_of(kwargs.get("processing_class")),
                self.parallelism.sp_size,
                fixed_row_length(self.parallelism, args),
                keep_examples=args.oom_resplit and not self.parallelism.enabled,  # an OOM's parts are re-collated
            )
        self.ref_cache = ReferenceLogpsCache.from_args(args) if self.loss_fn.needs_reference else None
        self.nonfinite_guard = NonFiniteGuard(args.max_nonfinite_steps)
        self._pair_buffer = {"train": [], "eval": []}  # gathered per-pair values since the last log
        self._step_at_last_log = None  # optimizer steps the train buffer spans = global_step - this
        super().__init__(
            model,
            ref_model,
            args,
            load_reference=self.loss_fn.needs_reference,
            trl_hash=self.ref_cache is None,  # our cache keys on a cheap fingerprint instead
            **kwargs,
        )
        if self.parallelism.enabled:  # DeepSpeed's adapter, made restartable per epoch and resumable
            wrap_sequence_parallel_dataloader(self.accelerator, EpochSlices)
        stop_signals = parse_signal_names(args.stop_signals)
        self.stop_on_signal = StopOnSignal(stop_signals)  # checkpoint, then exit 75
        self.add_callback(self.stop_on_signal)
        if "SIGTERM" in stop_signals and args.dataloader_num_workers > 0:
            logger.warning(
                "stop_signals includes SIGTERM with dataloader_num_workers > 0: torchrun forwards SIGTERM to the whole "
                "process group and a data-loading worker dies of it, which ends the step instead of checkpointing "
                "it. The Slurm script's SIGUSR1 is not affected; or set dataloader_num_workers: 0."
            )
        self.oom_splitter = None  # splits a micro-batch whose forward runs out of memory (`oom_resplit`)
        if args.oom_resplit:
            unavailable = resplit_unavailable(self)
            if unavailable:
                logger.info("oom_resplit: not available here (%s); an out-of-memory error stops the run.", unavailable)
            else:
                self.oom_splitter = MicroBatchSplitter()
        if self.oom_splitter is None and getattr(self.data_collator, "keep_examples", False):
            self.data_collator.keep_examples = False  # nothing will re-collate them

    # ---- Data ---------------------------------------------------------------------------------------------------

    def check_tokenized_dataset(self, dataset, tokenized, split, tokenizer, args):
        return check_tokenized(len(dataset), tokenized, split, tokenizer.bos_token_id, args, self.max_drop_fraction)

    def extra_pair_columns(self):
        return PAIR_COLUMNS

    def get_resumed_dataloader(self, dataloader, num_batches):
        """A run resumed mid-epoch skips the batches already trained on; under sequence parallelism they are slices of
        DeepSpeed's adapter."""
        if isinstance(dataloader, EpochSlices):
            return dataloader.skip(num_batches)
        return super().get_resumed_dataloader(dataloader, num_batches)

    def precompute_reference(self, dataset, split, batch_size):
        return None if self.ref_cache is None else self.ref_cache.get_or_compute(self, dataset, split, batch_size)

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

    def compute_ref_log_probs(self, model, inputs):
        """Reference log-probs of one batch of whole rows (TRL's precompute calls this); packed batches work too.
        Under sequence parallelism the model may be the training policy (PEFT): its attention must not slice."""
        whole = attention_over_group(model, sliced=False) if self.parallelism.enabled else contextlib.nullcontext()
        with self._reference_context(), self.accelerator.autocast(), whole:
            return sequence_logps(model, inputs, ld_alpha=self.args.ld_alpha).logps.chunk(2, dim=0)

    def reference_logps(self, inputs, group: SequenceParallelGroup | None = None):
        """(chosen, rejected) reference log-probs of a collated batch: its precomputed columns, else a forward of
        the reference (the policy with its adapter off for PEFT), as the loss receives them; for a slice of a row,
        completed over its sequence-parallel `group`."""
        if "ref_chosen_logps" in inputs:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        reference = self.ref_model or self.model
        with self._reference_context(), attention_over_group(reference) if group else contextlib.nullcontext():
            out = sequence_logps(reference, inputs, ld_alpha=self.args.ld_alpha, sequence_parallel=group)
        return out.logps.chunk(2)

    def sequence_parallel_group(self) -> SequenceParallelGroup | None:
        """This rank's sequence-parallel group (DeepSpeed builds it when accelerate prepares the model), or None."""
        if not self.parallelism.enabled:
            return None
        if self._sequence_parallel_group is None:
            self._sequence_parallel_group = SequenceParallelGroup.current()
        return self._sequence_parallel_group

    # ---- Loss ---------------------------------------------------------------------------------------------------

    def compute_preference_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        examples = inputs.get(EXAMPLES_KEY)
        inputs = with_pair_columns(without_examples(inputs))
        group = self.sequence_parallel_group() if is_sharded(inputs) else None  # evaluation: whole sequences
        if mode == "train" and self.oom_splitter is not None and examples is not None and not return_outputs:
            return self._loss_splitting_on_oom(model, inputs, examples)
        policy, references = self._forward(model, inputs, group)
        return self._loss(mode, inputs, policy, references, group, return_outputs)

    def _forward(self, model, inputs, group=None):
        """The policy's per-sequence log-probs (with the graph, when grad is on) and the reference's."""
        # TRL's options read in the forward: LD-DPO's weights, WPO's, and (MoE) the router's logits for its aux loss
        router = {"output_router_logits": True} if self.aux_loss_enabled else {}
        policy = sequence_logps(
            model, inputs, ld_alpha=self.args.ld_alpha, wpo=self.args.use_weighting, sequence_parallel=group, **router
        )
        references = self.reference_logps(inputs, group) if self.loss_fn.needs_reference else (None, None)
        return policy, references

    def _loss(self, mode, inputs, policy, references, group, return_outputs):
        """The loss of a micro-batch from its log-probs; logs its per-pair metrics (and updates loss state) once."""
        chosen_logps, rejected_logps = policy.logps.chunk(2, dim=0)
        chosen_lengths, rejected_lengths = policy.lengths.chunk(2, dim=0)
        ref_chosen_logps, ref_rejected_logps = references
        out = self.loss_fn(
            policy_chosen_logps=chosen_logps,
            policy_rejected_logps=rejected_logps,
            chosen_lengths=chosen_lengths,
            rejected_lengths=rejected_lengths,
            ref_chosen_logps=ref_chosen_logps,
            ref_rejected_logps=ref_rejected_logps,
            reward_margins=inputs.get("reward_margin"),
            pair_log_weights=sum(policy.wpo_log_weights.chunk(2)) if self.args.use_weighting else None,
            training=mode == "train",  # alpha-DPO: evaluation reads its running statistics, never updates them
            gather=self._pair_gather(group, self.accelerator.gather),
        )
        loss = out.losses.mean()
        if self.aux_loss_enabled:  # as TRL: the load-balancing loss of the experts, weighted
            loss = loss + self.router_aux_loss_coef * policy.aux_loss
            self.add_logged_metric(
                mode, "aux_loss", self.accelerator.gather_for_metrics(policy.aux_loss).mean().item()
            )
        self._log_pair_metrics(
            mode, out, policy, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, group
        )
        if return_outputs:  # Trainer's prediction_step reads `.logits`: expose the rewards there
            return loss, SimpleNamespace(logits=torch.stack([out.chosen_rewards, out.rejected_rewards], dim=1))
        return loss

    # ---- Out of memory: split the micro-batch (adadpo.training.oom) ---------------------------------------------

    def _loss_splitting_on_oom(self, model, inputs, examples: PairExamples):
        pairs, tokens = len(examples), inputs["input_ids"].numel()
        parts = self.oom_splitter.preferred_parts(tokens, pairs)
        while True:
            if parts == 1:
                compute = lambda: self._forward(model, inputs)  # noqa: E731
            else:
                compute = lambda: [self._forward_without_graph(model, p) for p in examples.parts(parts)]  # noqa: B023, E731
            result, failed, split = self._attempt_together(model, compute)
            if not split:
                break
            if failed:
                self.oom_splitter.record(tokens // parts)
            if any_process(parts >= pairs):  # one pair per part already
                raise OutOfMemoryStop(stop_message(1, max(p.tokens() for p in examples.parts(parts)), "forward"))
            parts = min(2 * parts, pairs)  # 3 pairs: 2 parts, then 3
            logger.warning(
                "Out of memory (%s): splitting a micro-batch of %d pairs into %d parts.",
                failed or "on another process",
                pairs,
                parts,
            )
        if parts == 1:
            policy, references = result
            return self._loss("train", inputs, policy, references, None, False)
        self.oom_splitter.splits += 1
        # The loss of the whole micro-batch from the parts' log-probs, and its gradient per sequence
        policy, references = joined_parts(result)
        policy.logps.requires_grad_(True)
        loss = self._loss("train", inputs, policy, references, None, False)
        (logps_grad,) = torch.autograd.grad(loss, policy.logps)
        # Each part's forward with a graph, backpropagated with its share: sum(logps * d loss / d logps)
        work = collections.deque(zip(examples.parts(parts), pair_slices(logps_grad, examples.parts(parts))))
        while work:
            part, part_grad = work.popleft()
            last = not work  # the last part is returned: training_step backpropagates it (and syncs gradients)
            with contextlib.nullcontext() if last else gradient_sync_paused(self.accelerator):
                surrogate, _, split = self._attempt_together(model, lambda: self._surrogate(model, part, part_grad))  # noqa: B023
                if not split and not last:
                    backward_as_training_step(self, surrogate, self._num_items_in_batch)
            if not split:
                if last:
                    return surrogate + (loss - surrogate).detach()  # its value: the whole micro-batch's loss
                continue
            if any_process(len(part) < 2):
                raise OutOfMemoryStop(stop_message(len(part), part.tokens(), "forward"))
            halves = part.parts(2)
            work.extendleft(reversed(list(zip(halves, pair_slices(part_grad, halves)))))
        raise AssertionError("unreachable: the last part returns its surrogate")

    def _attempt_together(self, model, compute):
        """`compute()` on every process: (its result, this process's OOM message, whether any process ran out of
        memory). After a failure anywhere the attempt is undone everywhere: its memory released (a process that got
        through holds a graph too), and DDP's buffer-broadcast flag put back (its forward sets it only on completing,
        so the processes would disagree on a broadcast at the next forward)."""
        forward_sync = getattr(model, "require_forward_param_sync", None)
        result, failed = attempt(compute)
        if not agreed_failure(failed):
            return result, None, False
        del result
        release_memory()
        if forward_sync is not None:
            model.require_forward_param_sync = forward_sync
        self.oom_splitter.failed_anywhere = True
        return None, failed, True

    def _forward_without_graph(self, model, part: PairExamples):
        with torch.no_grad():
            policy, references = self._forward(model, self._part_inputs(part))
        return policy, references

    def _surrogate(self, model, part: PairExamples, part_grad):
        """sum(logps * d loss / d logps) over the part's sequences: its backward is the part's share of the gradient."""
        return (sequence_logps(model, self._part_inputs(part), ld_alpha=self.args.ld_alpha).logps * part_grad).sum()

    def _part_inputs(self, part: PairExamples) -> dict:
        """A part re-collated from its examples, on the device, as `compute_preference_loss` reads a batch."""
        return with_pair_columns(self.on_device(part.batch()))

    def on_device(self, batch: dict) -> dict:
        return send_to_device(batch, self.accelerator.device)

    def training_step(self, model, inputs, num_items_in_batch=None):
        """transformers' step; an out-of-memory error that could not be split away stops with what to change."""
        self._num_items_in_batch = num_items_in_batch  # the parts backpropagated early are scaled alike
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        except torch.OutOfMemoryError as error:
            pairs = int(inputs["num_pairs"]) if "num_pairs" in inputs else inputs["input_ids"].size(0) // 2
            tokens, cause = inputs["input_ids"].numel(), error
        raise OutOfMemoryStop(stop_message(pairs, tokens, "forward or backward")) from cause

    def train(self, *args, **kwargs):
        try:
            result = super().train(*args, **kwargs)
            if self.stop_on_signal.stopped and not self.stop_on_signal.checkpointed:  # a safety net: the epoch-end
                self.save_checkpoint_now()  # save after a stop normally writes it (StopOnSignal.on_epoch_end)
                self.stop_on_signal.checkpointed = True
        finally:
            self.stop_on_signal.restore()  # the signals' own behaviour again, also when training raised
        return result

    # ---- Metrics ------------------------------------------------------------------------------------------------

    def _pair_gather(self, group, gather):
        """`gather` of per-pair values over the processes; the ranks of a sequence-parallel group hold the same pairs,
        so one copy per group is kept."""
        if group is None:
            return gather
        return lambda values: group.one_copy_per_group(gather(values), values.numel())

    def _log_pair_metrics(self, mode, out, policy, chosen_logps, rejected_logps, ref_chosen, ref_rejected, group):
        """Gather this micro-batch's per-pair values; `log` summarises every pair since the last log at once, so a
        median, min or max covers the whole optimizer step (or eval set), however it is split into micro-batches."""
        # a slice's pairs: `gather`, since gather_for_metrics would cut an epoch's last batch to the remainder of
        # the dataset per process, which sequence-parallel ranks sharing each pair do not have
        gather = self._pair_gather(group, self.accelerator.gather if group else self.accelerator.gather_for_metrics)
        per_pair = {
            "chosen_rewards": out.chosen_rewards,
            "rejected_rewards": out.rejected_rewards,
            "chosen_logps": chosen_logps.detach(),
            "rejected_logps": rejected_logps.detach(),
            "chosen_lengths": policy.lengths.chunk(2)[0].float(),
            "rejected_lengths": policy.lengths.chunk(2)[1].float(),
            **{k: out.metrics[k].detach().float() for k in self.loss_fn.spec.logged_metrics if k in out.metrics},
        }
        if ref_chosen is not None:
            per_pair["ref_chosen_logps"] = ref_chosen.detach().float()
            per_pair["ref_rejected_logps"] = ref_rejected.detach().float()
        self._pair_buffer[mode].append({k: gather(v.float()).cpu() for k, v in per_pair.items()})
        if mode == "train" and self._step_at_last_log is None:  # the first micro-batch, resumed or not
            self._step_at_last_log = self.state.global_step
        if mode == "train":
            # as TRL counts: tensor-parallel ranks hold the same batch, so the gathered count repeats it per rank
            # (each rank of a sequence-parallel group counts the tokens of its own slice)
            gather_tokens = self.accelerator.gather if group else self.accelerator.gather_for_metrics
            tokens = int(gather_tokens(policy.num_tokens.reshape(1)).sum().item())
            self.total_train_tokens += tokens // self.tensor_parallel_size
            self.set_logged_metric(mode, "num_tokens", self.total_train_tokens)

    def _summarise_pair_metrics(self, mode: str) -> None:
        buffered, self._pair_buffer[mode] = self._pair_buffer[mode], []
        if not buffered:
            return
        pairs = {key: torch.cat([batch[key] for batch in buffered]) for key in buffered[0]}
        metrics = pair_metrics(pairs, beta=self.args.beta)
        if mode == "train":  # pairs per optimizer step over all processes (an epoch's last step may be short)
            steps = max(1, self.state.global_step - self._step_at_last_log)
            self._step_at_last_log = self.state.global_step
            metrics["batch/pairs"] /= steps
        for key, value in metrics.items():
            self.set_logged_metric(mode, key, value)

    def log(self, logs, start_time=None):
        if self.model.training and "loss" in logs:  # read after the optimizer step, so a skipped step counts itself
            self.set_logged_metric("train", "nonfinite_steps", self.nonfinite_guard.total_skipped)
        self._summarise_pair_metrics("train" if self.model.training else "eval")
        super().log(logs, start_time)

    # ---- Optimizer guard, checkpoints, model card ----------------------------------------------------------------

    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        self.nonfinite_guard.wrap(optimizer, self.accelerator)
        return optimizer

    def before_checkpoint(self):
        self.nonfinite_guard.check_weights_finite(self.model)

    def save_extra_state(self, folder):
        save_extra_state(self, folder)

    def after_checkpoint(self, folder):
        if self.hub_pusher is not None and self.is_world_process_zero():  # complete on every rank by now
            self.hub_pusher.push(self, folder)

    def load_extra_state(self, checkpoint):
        """Resume also restores what `save_extra_state` adds: alpha-DPO's normalizer and the running counters."""
        load_extra_state(self, checkpoint)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        if not self.is_world_process_zero():
            return
        write_model_card(self, os.path.join(self.args.output_dir, "README.md"))
