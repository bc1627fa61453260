"""Config dataclasses: TRL's, plus only the fields this project adds. Everything is validated in `__post_init__`,
so a bad recipe fails before a model is loaded or a file is written; building a config reads nothing else (the
launch, i.e. processes and devices, is checked where the run is built: `adadpo.training.launch_checks.apply_launch`).

The loss hyperparameters are not written here: `LossHyperparameters` is derived from their declarations in
`adadpo.losses.hparams` (name, type, default, help, choices).
"""

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

import trl

from adadpo.losses import LOSS_HPARAMS, HParam, get_loss_spec, validate_loss_hparams
from adadpo.user_numbers import to_number


def number_from_recipe(name: str, value: Any) -> Any:
    """A float field's value as a number: text that is a number (YAML 1.1 reads `5e-7` as text) is used with a
    warning; other text is refused, naming the key. Never train on a string."""
    if isinstance(value, str):
        number = to_number(name, value)
        warnings.warn(f"`{name}` was read as the string {value!r}; write `5.0e-7`. Using {number}.", stacklevel=3)
        return number
    return value


def _hparam_field(hparam: HParam) -> tuple[str, type, dataclasses.Field]:
    metadata = {"help": hparam.help} | ({"choices": list(hparam.choices)} if hparam.choices else {})
    kind = hparam.kind | None if hparam.optional else hparam.kind
    return hparam.name, kind, field(default=hparam.default, metadata=metadata)


# Every loss hyperparameter as a config field, from its declaration; listed before TRL's fields in the bases of
# `AdaDPOConfig`, so that its `beta` (same default as TRL's) carries our help text.
LossHyperparameters = dataclasses.make_dataclass(
    "LossHyperparameters", [_hparam_field(hparam) for hparam in LOSS_HPARAMS.values()]
)


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
            self.test_split_size = number_from_recipe("test_split_size", self.test_split_size)
            if self.test_split_size <= 0:
                raise ValueError(f"`test_split_size` must be > 0, got {self.test_split_size}.")


@dataclass
class AdaDPOConfig(LossHyperparameters, trl.DPOConfig):
    """`trl.DPOConfig` plus the loss name, every loss hyperparameter of `adadpo.losses` and our training options."""

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
        for name in ("eval_strategy", "save_strategy", "logging_strategy"):
            if getattr(self, name) is False:  # YAML 1.1 reads an unquoted `no` as false
                setattr(self, name, "no")
        float_fields = [name for name, hparam in LOSS_HPARAMS.items() if hparam.kind is float]
        for name in (*float_fields, "learning_rate", "weight_decay", "warmup_steps"):
            setattr(self, name, number_from_recipe(name, getattr(self, name)))
        super().__post_init__()  # TRL 1.16 turns a `loss_type` string into a list (its field names several losses)
        if isinstance(self.loss_type, list | tuple):  # ours names exactly one loss
            if len(self.loss_type) != 1:
                raise ValueError(f"`loss_type` names one loss, got {self.loss_type}.")
            self.loss_type = self.loss_type[0]
        spec = get_loss_spec(self.loss_type)  # an unknown name raises, listing every loss
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

    @property
    def loss_hparams(self) -> dict[str, Any]:
        """Every loss hyperparameter, by config name, as `adadpo.losses.preference_loss` takes them."""
        return {name: getattr(self, name) for name in LOSS_HPARAMS}
