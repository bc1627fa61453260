"""Config dataclasses: TRL's, plus only the fields this project adds. Everything is validated in `__post_init__`,
so a bad recipe fails before a model is loaded or a file is written."""

import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import trl

from adadpo.launch_checks import check_fsdp_launch, check_process_group, derive_gradient_accumulation
from adadpo.losses import LOSS_HPARAM_DEFAULTS, get_loss_spec, validate_loss_hparams


_DEFAULTS = LOSS_HPARAM_DEFAULTS


def number_from_text(name: str, text: str) -> float:
    """YAML 1.1 reads `5e-7` (no dot) as a string: the number it means, or an error naming the key. The one place
    that turns recipe text into numbers (configs here, sweep grids in `adadpo.sweep.grid`)."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"`{name}` must be a number, got the string {text!r}. Write floats as `5.0e-7`.") from None


def _coerce_float(name: str, value: Any) -> Any:
    """Coerce numeric strings with a warning; never train on a string."""
    if isinstance(value, str):
        number = number_from_text(name, value)
        warnings.warn(
            f"`{name}` was read as the string {value!r} (YAML reads `5e-7` as text; write `5.0e-7`). Using {number}.",
            stacklevel=3,
        )
        return number
    return value


@dataclass
class ScriptArguments(trl.ScriptArguments):
    """Data arguments: TRL's (`dataset_name`, splits, ...) plus mixtures of Hub ids and local files."""

    dataset_mixture: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Mixture of datasets: {datasets: [{path, name?, data_files?, split?, columns?, weight?}], "
            "test_split_size?, seed?}. `path` is a Hub id, a local .jsonl/.json/.parquet/.csv file, or a "
            "`save_to_disk` folder. Overrides `dataset_name`."
        },
    )
    column_mapping: dict[str, str] | None = field(
        default=None,
        metadata={
            "help": "Rename dataset columns before training, e.g. {text_chosen: chosen, text_rejected: rejected}."
        },
    )
    test_split_size: float | None = field(
        default=None,
        metadata={"help": "Hold out this fraction (or count, if >= 1) of the train split as the eval set."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N training pairs (quick runs, demos)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N evaluation pairs."})
    chat_template: str | None = field(
        default=None, metadata={"help": "Jinja chat template that replaces the tokenizer's own."}
    )
    max_drop_fraction: float = field(
        default=0.5,
        metadata={
            "help": "Stop with an error if data validation drops more than this fraction of rows (empty completions, "
            "chosen == rejected, prompt longer than `max_length`)."
        },
    )

    def __post_init__(self):
        if self.dataset_mixture is None and self.dataset_name is None:
            raise ValueError("No data: set `dataset_name` (Hub id or local file/folder) or `dataset_mixture`.")
        if not 0.0 <= self.max_drop_fraction <= 1.0:
            raise ValueError(f"`max_drop_fraction` must be in [0, 1], got {self.max_drop_fraction}.")
        if self.test_split_size is not None:
            self.test_split_size = _coerce_float("test_split_size", self.test_split_size)
            if self.test_split_size <= 0:
                raise ValueError(f"`test_split_size` must be > 0, got {self.test_split_size}.")


@dataclass
class AdaDPOConfig(trl.DPOConfig):
    """`trl.DPOConfig` plus the loss name and every loss hyperparameter of `adadpo.losses`."""

    loss_type: str = field(
        default="adadpo",
        metadata={"help": "Preference loss, a name from `adadpo.losses.LOSSES` (adadpo, dpo, simpo, ...)."},
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Pairs per optimizer step over all processes (the papers use 128). `gradient_accumulation_steps` "
            "is derived as global_batch_size / (world_size * per_device_train_batch_size)."
        },
    )
    adadpo_clip: float | None = field(
        default=_DEFAULTS["adadpo_clip"],
        metadata={"help": "C: beta_w <= C * beta (Stable AdaDPO). `null` disables clipping."},
    )
    adadpo_length_normalize: bool = field(
        default=_DEFAULTS["adadpo_length_normalize"],
        metadata={"help": "Balance on per-token log ratios (Stable AdaDPO, Listing 1). False: summed logps (eq. 6)."},
    )
    adadpo_balance: str = field(
        default=_DEFAULTS["adadpo_balance"],
        metadata={
            "help": "'ratio': balance gradients w.r.t. P/P_ref (eq. 5). 'policy': w.r.t. P (eq. 4).",
            "choices": ["ratio", "policy"],
        },
    )
    adadpo_scale: float = field(
        default=_DEFAULTS["adadpo_scale"], metadata={"help": "k of appendix A.3: beta_w / beta_l = k * sg(...)."}
    )
    simpo_gamma: float = field(
        default=_DEFAULTS["simpo_gamma"], metadata={"help": "Target reward margin gamma (SimPO, alpha-DPO)."}
    )
    sft_weight: float = field(
        default=_DEFAULTS["sft_weight"], metadata={"help": "Weight of an extra per-token NLL on chosen (SimPO)."}
    )
    nll_average: str = field(
        default=_DEFAULTS["nll_average"],
        metadata={
            "help": "How the chosen-response NLL of cpo, orpo and simpo's `sft_weight` term (and their Ada- versions) "
            "averages tokens. 'batch': sum(-log p) / sum(|y_w|) over the micro-batch, as TRL's CPO/ORPO and the "
            "official SimPO trainer. 'pair': each pair's own token average, then the mean over pairs.",
            "choices": ["batch", "pair"],
        },
    )
    alpha_dpo_alpha: float = field(
        default=_DEFAULTS["alpha_dpo_alpha"],
        metadata={
            "help": "alpha of alpha-DPO in the paper's eq. 12 form: weight of the normalised margin. The official "
            "code's `alpha` is multiplied by beta: alpha_dpo_alpha = beta x alpha_code (docs/losses.md)."
        },
    )
    alpha_dpo_momentum: float = field(
        default=_DEFAULTS["alpha_dpo_momentum"],
        metadata={"help": "EMA momentum of alpha-DPO's margin mean/std normaliser (state saved in checkpoints)."},
    )
    rdpo_alpha: float = field(
        default=_DEFAULTS["rdpo_alpha"], metadata={"help": "alpha of R-DPO: length penalty alpha * (|y_w| - |y_l|)."}
    )
    cpo_alpha: float = field(
        default=_DEFAULTS["cpo_alpha"], metadata={"help": "lambda of CPO: weight of the per-token NLL on chosen."}
    )
    orpo_lambda: float = field(
        default=_DEFAULTS["orpo_lambda"], metadata={"help": "lambda of ORPO: weight of the odds-ratio term."}
    )
    madpo_c_max: float = field(
        default=_DEFAULTS["madpo_c_max"], metadata={"help": "MADPO: largest weight, for the hardest pairs."}
    )
    madpo_c_min: float = field(
        default=_DEFAULTS["madpo_c_min"], metadata={"help": "MADPO: smallest weight, for the easiest pairs."}
    )
    madpo_lambda: float = field(
        default=_DEFAULTS["madpo_lambda"], metadata={"help": "MADPO: steepness of the weight around `madpo_tau`."}
    )
    madpo_tau: float = field(
        default=_DEFAULTS["madpo_tau"], metadata={"help": "MADPO: hard/easy threshold on the reward margin |h_rm|."}
    )
    max_tokens_per_batch: int | None = field(
        default=None,
        metadata={"help": "With `padding_free`, split a micro-batch into packed rows of at most this many tokens."},
    )
    ref_logps_cache_dir: str | None = field(
        default=None,
        metadata={"help": "With `precompute_ref_log_probs`, reuse reference log-probs across runs from this folder."},
    )
    max_nonfinite_steps: int = field(
        default=3,
        metadata={"help": "Skip optimizer steps with a non-finite loss/gradient; stop after this many in a row."},
    )

    def __post_init__(self):
        if isinstance(self.loss_type, list | tuple):  # TRL's field is a list; ours names exactly one loss
            if len(self.loss_type) != 1:
                raise ValueError(f"`loss_type` names one loss, got {self.loss_type}.")
            self.loss_type = self.loss_type[0]
        spec = get_loss_spec(self.loss_type)  # an unknown name raises, listing every loss
        for name in ("eval_strategy", "save_strategy", "logging_strategy"):
            if getattr(self, name) is False:  # YAML 1.1 reads an unquoted `no` as false
                setattr(self, name, "no")
        for name, default in LOSS_HPARAM_DEFAULTS.items():
            if not isinstance(default, str):  # adadpo_balance and nll_average name a choice
                setattr(self, name, _coerce_float(name, getattr(self, name)))
        for name in ("learning_rate", "weight_decay", "warmup_steps"):
            setattr(self, name, _coerce_float(name, getattr(self, name)))
        validate_loss_hparams(self.loss_hparams)
        if self.max_nonfinite_steps < 1:
            raise ValueError(f"`max_nonfinite_steps` must be >= 1, got {self.max_nonfinite_steps}.")
        if not spec.needs_reference and (self.precompute_ref_log_probs or self.ref_logps_cache_dir):
            warnings.warn(
                f"`{self.loss_type}` is reference-free: `precompute_ref_log_probs` / `ref_logps_cache_dir` are "
                "ignored and no reference model is loaded.",
                stacklevel=2,
            )
            self.precompute_ref_log_probs = False
            self.ref_logps_cache_dir = None
        # TRL validates its own `loss_type` list; hand it a value it knows, then restore ours.
        loss_type, self.loss_type = self.loss_type, ["sigmoid"]
        try:
            super().__post_init__()
        finally:
            self.loss_type = loss_type
        check_process_group(int(os.environ.get("WORLD_SIZE", "1")), self.world_size)
        check_fsdp_launch(os.environ, self.distributed_state.distributed_type.value)
        if self.global_batch_size is not None:
            self.gradient_accumulation_steps = derive_gradient_accumulation(
                self.global_batch_size, self.world_size, self.per_device_train_batch_size
            )

    @property
    def loss_hparams(self) -> dict[str, Any]:
        """Every loss hyperparameter, by config name, as `adadpo.losses.preference_loss` takes them."""
        return {name: getattr(self, name) for name in LOSS_HPARAM_DEFAULTS}
