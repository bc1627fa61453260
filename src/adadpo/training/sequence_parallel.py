"""Sequence parallelism for preference pairs: DeepSpeed's ALST / Ulysses attention, with the per-sequence sums every
preference loss needs combined over the sequence-parallel (SP) group.

The launch: an accelerate config with DeepSpeed and `parallelism_config: {parallelism_config_sp_size: N}`
(`accelerate_configs/deepspeed_zero3_sp8.yaml`). accelerate then registers DeepSpeed's `UlyssesSPAttentionHF` in
place of the model's attention kernel and wraps the training dataloader in `UlyssesSPDataLoaderAdapter`:

1. Each micro-batch is one pair, its chosen and rejected sequences packed in one row (`padding_free`), padded to a
   multiple of N with a masked pseudo-sequence (`adadpo.training.collators`). The collator also writes the row's
   `labels` (the scored completion tokens) and keeps the per-pair columns apart from the token tensors
   (`PAIR_COLUMNS_KEY`), so the adapter slices only per-token tensors.
2. The adapter gathers the micro-batches of the N ranks of a group and gives rank r the r-th slice of each, with
   `shift_labels` computed before slicing (the label of a slice's last token is the next slice's first token).
3. Attention all-to-alls the slices into whole sequences with a subset of the heads (the flash-attention varlen
   kernel keeps the packed sequences apart through the gathered `position_ids`), and back.
4. Each rank sums the log-probs of its slice's tokens per sequence (`adadpo.training.logps`); `SequenceParallelGroup`
   adds those partial sums over the group, for the policy and a live reference alike, so every loss sees the
   whole-sequence log-probs and lengths of one process.

Gradients: the loss is computed identically on every rank of the group, but each rank back-propagates only through
its own partial sum (`SequenceParallelGroup.sum`: forward all-reduce, backward identity). DeepSpeed then sums the
gradients over the group (it divides by the data-parallel size only), which is the one-process gradient.
"""

import contextlib
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from adadpo.training.packing import uses_flash_varlen


# The collated per-pair columns (reference log-probs, MADPO's margins) travel under this key as a dict, which the
# DeepSpeed adapter passes whole to the rank that collated them instead of slicing it like a token tensor.
PAIR_COLUMNS_KEY = "pair_columns"
# What the DeepSpeed adapter adds to a slice it hands out: a batch holding it is one rank's slice of a row.
SHARDED_BATCH_KEY = "shift_labels"


# ---- The launch ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchParallelism:
    """The `parallelism_config` of an accelerate launch, as accelerate reads it in each process (its `launch` writes the
    config file's `parallelism_config_*` keys into `PARALLELISM_CONFIG_*` environment variables)."""

    sp_size: int = 1
    sp_backend: str = "deepspeed"
    cp_size: int = 1
    tp_size: int = 1
    dp_shard_size: int = 1
    dp_replicate_size: int = 1

    @classmethod
    def from_environ(cls, environ=None) -> "LaunchParallelism":
        environ = os.environ if environ is None else environ
        if environ.get("ACCELERATE_USE_PARALLELISM_CONFIG", "false").lower() != "true":
            return cls()

        def size(name: str) -> int:
            return int(environ.get(f"PARALLELISM_CONFIG_{name}_SIZE", "1"))

        return cls(
            sp_size=size("SP"),
            sp_backend=environ.get("PARALLELISM_CONFIG_SP_BACKEND", "deepspeed"),
            cp_size=size("CP"),
            tp_size=size("TP"),
            dp_shard_size=size("DP_SHARD"),
            dp_replicate_size=size("DP_REPLICATE"),
        )

    @property
    def enabled(self) -> bool:
        return self.sp_size > 1


def check_launch(parallelism: LaunchParallelism, args, uses_deepspeed: bool) -> None:
    """Refuse, before anything is loaded or written, a launch whose parallelism the preference losses would not see
    whole: context or tensor parallelism (each rank would sum a part of a sequence, or of a hidden state, unknown to
    the loss), and sequence parallelism set up in a way this module does not make exact."""
    if parallelism.cp_size > 1 or parallelism.tp_size > 1:
        raise ValueError(
            f"The accelerate config sets parallelism_config_cp_size={parallelism.cp_size} / "
            f"parallelism_config_tp_size={parallelism.tp_size}: context and tensor parallelism would split what the "
            "preference losses sum per sequence, and are not proven equal to one process here. For long sequences use "
            "sequence parallelism (parallelism_config_sp_size with DeepSpeed; docs/long_context.md); otherwise remove "
            "the parallelism_config block."
        )
    if not parallelism.enabled:
        return
    problems = []
    if not uses_deepspeed:
        problems.append(
            "it runs only under DeepSpeed (accelerate ignores it on other launches): launch with "
            "accelerate_configs/deepspeed_zero3_sp8.yaml or another DeepSpeed config"
        )
    if parallelism.dp_shard_size > 1:
        problems.append("`parallelism_config_dp_shard_size` is FSDP's; with DeepSpeed leave it at 1")
    if args.world_size % parallelism.sp_size:
        problems.append(f"{args.world_size} processes do not split into groups of {parallelism.sp_size}")
    elif parallelism.dp_replicate_size * parallelism.sp_size != args.world_size:
        problems.append(
            f"set `parallelism_config_dp_replicate_size: {args.world_size // parallelism.sp_size}` (processes / "
            f"sp_size; accelerate sizes DeepSpeed's batch with it, now {parallelism.dp_replicate_size})"
        )
    if not args.padding_free:
        problems.append("it splits packed rows: set `padding_free: true`")
    if args.per_device_train_batch_size != 1:
        problems.append(
            "DeepSpeed's attention fixes the rows per micro-batch to per_device_train_batch_size, and a packed "
            "micro-batch is one row: set `per_device_train_batch_size: 1` (one pair per micro-batch; "
            "`global_batch_size` keeps the batch through gradient accumulation)"
        )
    if args.max_tokens_per_batch is not None:
        problems.append("`max_tokens_per_batch` makes several rows per micro-batch: remove it")
    if args.use_cpu and args.max_length is None:
        problems.append("on CPU every row is padded to 2 x `max_length` (gloo gathers equal sizes only): set it")
    if not args.dataloader_drop_last:
        problems.append(
            "the ranks of a group train one pair after another, and at an epoch's end accelerate would pad the last "
            "ranks' batches with repeats of the first pairs: set `dataloader_drop_last: true` (at most "
            "processes - 1 pairs an epoch are left out)"
        )
    if not args.disable_dropout:
        problems.append(
            "a live reference runs its slices in training mode (DeepSpeed's attention steps aside in eval mode): "
            "set `disable_dropout: true`"
        )
    if problems:
        raise ValueError(
            f"Sequence parallelism (parallelism_config_sp_size={parallelism.sp_size}): " + "; ".join(problems) + "."
        )


def check_model(parallelism: LaunchParallelism, model_config, attn_implementation: str | None) -> None:
    """The model's side: DeepSpeed splits the attention heads over the group, and only flash-attention's varlen
    kernel keeps packed sequences apart once DeepSpeed has dropped the attention mask."""
    if not parallelism.enabled:
        return
    sp = parallelism.sp_size
    text_config = model_config.get_text_config()
    heads = text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    problems = []
    if heads % sp:
        problems.append(f"its {heads} attention heads do not split over {sp} ranks")
    if kv_heads % sp and sp % kv_heads:
        problems.append(f"its {kv_heads} key/value heads neither split over {sp} ranks nor divide {sp}")
    if getattr(text_config, "output_router_logits", False):
        problems.append(
            "its MoE router loss would be computed per slice of the row, not per sequence: set "
            "`output_router_logits: false` in `model_init_kwargs`"
        )
    if not uses_flash_varlen(attn_implementation):
        problems.append(
            f"attn_implementation={attn_implementation!r}: DeepSpeed's Ulysses attention drops the attention mask, "
            "so only flash-attention's varlen kernel (which reads the packed boundaries from position_ids) keeps "
            "the chosen and rejected sequences of a row apart; set `attn_implementation: flash_attention_2` "
            "(or flash_attention_3, or a kernels-community flash kernel)"
        )
    if problems:
        raise ValueError(
            f"Sequence parallelism over {sp} ranks cannot run this model: " + "; ".join(problems) + ". Change "
            "`parallelism_config_sp_size` in the accelerate config or the model arguments."
        )


def check_same_attention(policy_attention: str | None, reference_attention: str | None) -> None:
    """DeepSpeed wraps the policy's attention kernel only: a reference with another kernel would attend within its
    slice of the row."""
    if policy_attention != reference_attention:
        raise ValueError(
            f"Under sequence parallelism the reference model must use the policy's attention kernel "
            f"({policy_attention!r}), not {reference_attention!r}: load it with the same `attn_implementation`."
        )


def check_tensor_parallel(model) -> None:
    """A model loaded sharded by tensor parallelism (`tp_plan` in `model_init_kwargs`): each rank holds a slice of the
    hidden states, and what the losses sum per sequence is not proven to come out whole."""
    tp_size = getattr(model, "tp_size", None) or 1
    if tp_size > 1:
        raise ValueError(
            f"The model is loaded with tensor parallelism (tp_size={tp_size}, from `tp_plan` in `model_init_kwargs`): "
            "not proven equal to one process with the preference losses. Drop `tp_plan`; for models too large for "
            "one GPU use ZeRO-3 (accelerate_configs/deepspeed_zero3.yaml), for long sequences sequence parallelism."
        )


def parallelism_config(parallelism: LaunchParallelism, attn_implementation: str):
    """accelerate's `ParallelismConfig` for the trainer, with the model's attention kernel: accelerate's `launch`
    does not pass `parallelism_config_sp_attn_implementation` on to the processes, so without this DeepSpeed would be
    given none. Sequence lengths vary between micro-batches; evaluation runs whole sequences on every rank (its
    dataloader is not sliced)."""
    from accelerate import ParallelismConfig
    from accelerate.utils import DeepSpeedSequenceParallelConfig

    return ParallelismConfig(
        sp_size=parallelism.sp_size,
        sp_backend=parallelism.sp_backend,
        dp_replicate_size=parallelism.dp_replicate_size,
        sp_handler=DeepSpeedSequenceParallelConfig(
            sp_seq_length_is_variable=True,
            sp_attn_implementation=attn_implementation,
            sp_disable_in_eval=True,
        ),
    )


def fixed_row_length(parallelism: LaunchParallelism, args) -> int | None:
    """The length every training row (one pair, at most 2 x `max_length` tokens) is padded to, on CPU only:
    DeepSpeed's adapter all-gathers each rank's row, and gloo (unlike NCCL) gathers equal sizes only."""
    if not parallelism.enabled or not args.use_cpu:
        return None
    multiple = row_multiple(parallelism.sp_size, args.pad_to_multiple_of)
    return -(-2 * args.max_length // multiple) * multiple


def start_deepspeed_comm() -> None:
    """DeepSpeed builds the sequence-parallel groups through its own communication layer. On GPUs accelerate starts
    it; on CPU accelerate starts torch.distributed alone, so it is joined here (same process group, gloo)."""
    from deepspeed import comm

    if not comm.is_initialized():
        comm.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)


def row_multiple(sp_size: int, pad_to_multiple_of: int | None) -> int | None:
    """What a packed row's length must be a multiple of: the SP size (each rank gets an equal slice) and the user's
    `pad_to_multiple_of`."""
    if sp_size <= 1:
        return pad_to_multiple_of
    return math.lcm(sp_size, pad_to_multiple_of or 1)


# ---- Batches ---------------------------------------------------------------------------------------------------------


def is_sharded(batch: dict) -> bool:
    """Whether `batch` is one rank's slice of a row (handed out by DeepSpeed's adapter)."""
    return SHARDED_BATCH_KEY in batch


def with_pair_columns(batch: dict) -> dict:
    """The batch with the per-pair columns back at its top level as (B,) float tensors, as the loss reads them (they
    travel as lists: DeepSpeed's adapter pickles them to the other ranks, and a pickled CUDA tensor would land on the
    sender's device)."""
    if PAIR_COLUMNS_KEY not in batch:
        return batch
    batch = dict(batch)
    columns = batch.pop(PAIR_COLUMNS_KEY)
    device = batch["input_ids"].device
    return batch | {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in columns.items()}


@contextlib.contextmanager
def attention_over_group(model, sliced: bool = True):
    """DeepSpeed's Ulysses attention runs for modules in training mode and steps aside in eval mode (attending within
    what this rank holds). Inside this block every module of `model` says training (`sliced`: the batch is a slice of
    a row, attended across the group) or eval (`sliced=False`: a whole row on this rank, e.g. a reference pass on the
    policy while it trains). Dropout is off in both models (`disable_dropout`, checked at launch), so the mode changes
    nothing else."""
    modes = {module: module.training for module in model.modules()}
    model.train(sliced)
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


class EpochSlices:
    """DeepSpeed's `UlyssesSPDataLoaderAdapter`, restarted at every epoch and resumable mid-epoch.

    The adapter keeps one iterator over the wrapped dataloader for the whole run, and transformers reads exactly
    `len(adapter)` slices an epoch, so that iterator never reaches its end: the next epoch's first read would end it
    (an optimizer step without data, and every later pair of the epoch shifted). transformers calls `set_epoch` before
    each epoch: it sets the wrapped dataloader's epoch (and its sampler's, as transformers does for a plain dataloader,
    through `batch_sampler`) and starts a fresh pass, first skipping what a resumed run already trained on (`skip`):
    N slices per underlying batch of each rank, so whole batches through accelerate's `skip_first_batches` (which
    needs the wrapped dataloader, and copies its epoch) and the rest drawn."""

    def __init__(self, adapter):
        self.adapter = adapter
        self._skip = 0

    def __len__(self) -> int:
        return len(self.adapter)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.adapter)

    @property
    def batch_sampler(self):
        return getattr(self.adapter.dl, "batch_sampler", None)

    def skip(self, slices: int) -> "EpochSlices":
        """Skip `slices` at the start of the next epoch (a run resumed mid-epoch)."""
        self._skip = slices
        return self

    def set_epoch(self, epoch: int) -> None:
        from accelerate import skip_first_batches

        loader, size = self.adapter.dl, self.adapter.sp_world_size
        for target in (loader, getattr(self.batch_sampler, "batch_sampler", None)):
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)
        skip, self._skip = self._skip, 0
        self.adapter.iter = iter(skip_first_batches(loader, skip // size) if skip >= size else loader)
        self.adapter.micro_batches.clear()
        for _ in range(skip % size):
            next(self.adapter)


def slice_row(batch: dict, group: "SequenceParallelGroup") -> dict:
    """This rank's slice of a collated batch, cut by DeepSpeed's adapter as in training (a collective: every rank of
    the group calls it, each with its own batch; the slice returned is of rank 0's batch)."""
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPDataLoaderAdapter

    device = batch["input_ids"].device
    adapter = UlyssesSPDataLoaderAdapter(
        [batch], sp_rank=group.rank, sp_group=group.group, sp_world_size=group.size, device=device
    )
    sliced = next(iter(adapter))
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in sliced.items()}


# ---- The group -------------------------------------------------------------------------------------------------------


class _SumOwnShare(torch.autograd.Function):
    """Sum over the group forward; backward, the incoming gradient to this rank's own share, times `scale`."""

    @staticmethod
    def forward(ctx, local: Tensor, group, scale: float) -> Tensor:
        ctx.scale = scale
        total = local.detach().clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale if ctx.scale != 1 else grad, None, None


def deepspeed_gradient_scale(sp_size: int) -> float:
    """What each rank's gradient must be multiplied by for DeepSpeed's reduction to give the group's sum. ZeRO-1/2
    divide the reduced gradients by the data-parallel size only (a sum over the group). ZeRO-3 before DeepSpeed
    0.20.2 (deepspeedai/DeepSpeed#8854) averages them over the group instead, so each share counts sp_size times;
    transformers' `deepspeed_sp_compute_loss` applies the same rule (and refuses the configuration that mixes both)."""
    import deepspeed
    from packaging import version
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    old_zero3 = is_deepspeed_zero3_enabled() and version.parse(deepspeed.__version__) < version.parse("0.20.2")
    return float(sp_size) if old_zero3 else 1.0


@dataclass(frozen=True)
class SequenceParallelGroup:
    """The ranks that share each row, as DeepSpeed set them up (`deepspeed.runtime.sequence_parallel.parallel_state_sp`
    once accelerate has prepared the model)."""

    group: object
    size: int
    rank: int
    gradient_scale: float = 1.0

    @classmethod
    def current(cls) -> "SequenceParallelGroup":
        from deepspeed.runtime.sequence_parallel import parallel_state_sp

        size = parallel_state_sp.get_sequence_parallel_world_size()
        return cls(
            group=parallel_state_sp.get_sequence_parallel_group(),
            size=size,
            rank=parallel_state_sp.get_sequence_parallel_rank(),
            gradient_scale=deepspeed_gradient_scale(size),
        )

    def sum(self, local: Tensor) -> Tensor:
        """The group's sum of `local`, differentiable in this rank's own share only: every rank computes the same loss
        from the sum, and DeepSpeed adds the ranks' gradients, so each contributes d loss / d sum x d local / d params
        once (an autograd all-reduce would send every rank the group's sum of those, N times the gradient)."""
        return _SumOwnShare.apply(local, self.group, self.gradient_scale)

    def total(self, local: Tensor) -> Tensor:
        """The group's sum of `local`, without gradient (lengths, counts, detached weights)."""
        total = local.detach().clone()
        dist.all_reduce(total, group=self.group)
        return total

    def one_copy_per_group(self, gathered: Tensor, per_rank: int) -> Tensor:
        """`per_rank` values gathered from every process (in rank order), one copy per group: its ranks hold the same
        pairs (DeepSpeed's groups are consecutive ranks)."""
        return gathered.reshape(-1, self.size, per_rank)[:, 0].reshape(-1)

    def sum_before_this_rank(self, local: Tensor) -> Tensor:
        """Sum of `local` over the ranks before this one (their slices come earlier in the row); no gradient."""
        gathered = [torch.empty_like(local) for _ in range(self.size)]
        dist.all_gather(gathered, local.detach().contiguous(), group=self.group)
        return sum(gathered[: self.rank], torch.zeros_like(local))
