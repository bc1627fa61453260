"""Config dataclasses: TRL's, plus only the fields this project adds. Everything is validated in `__post_init__`,
so a bad recipe fails before a model is loaded or a file is written; building a config reads nothing else (the
launch, i.e. processes and devices, is checked where the run is built: `adadpo.training.launch_checks.apply_launch`).

The loss hyperparameters are not written here: `LossHyperparameters` is derived from their declarations in
`adadpo.losses.hparams` (name, type, default, help, choices).
"""

import dataclasses
import signal
import warnings
from dataclasses import dataclass, field
from typing import Any

import trl

from adadpo.losses import LOSS_HPARAMS, LOSS_SPECS, HParam, PreferenceLoss
from adadpo.upstream_options import field_defaults, option_conflicts, refusal_messages
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


_UNCATCHABLE = {"SIGKILL", "SIGSTOP"}


def parse_signal_names(text: str | None) -> list[str]:
    """`stop_signals` as written ("SIGTERM,SIGUSR1", "USR1", "none" or empty for none): canonical names, or a
    ValueError naming the bad entry."""
    names = [] if text is None else [part.strip().upper() for part in str(text).split(",") if part.strip()]
    if names in ([], ["NONE"]):
        return []
    canonical = []
    for name in names:
        full = name if name.startswith("SIG") else f"SIG{name}"
        if not isinstance(getattr(signal, full, None), signal.Signals) or full in _UNCATCHABLE:
            raise ValueError(
                f"`stop_signals`: {name!r} is not a signal a process can catch. Use names such as SIGTERM, SIGUSR1 "
                "or SIGUSR2 (comma-separated), or `none` to keep the default behaviour (the process dies at once)."
            )
        canonical.append(full)
    return list(dict.fromkeys(canonical))


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
        refused = refusal_messages(self, field_defaults(type(self)))
        if refused:
            raise ValueError("This configuration cannot run as asked:\n  - " + "\n  - ".join(refused))
        if self.dataset_mixture is None and self.dataset_name is None:
            raise ValueError("No data: set `dataset_name` (Hub id or local file/folder) or `dataset_mixture`.")
        if self.dataset_mixture is not None:
            defaults = field_defaults(type(self))
            beside = [
                name
                for name in ("dataset_name", "dataset_config", "dataset_train_split", "dataset_test_split")
                if getattr(self, name) != defaults[name]
            ]
            if beside:
                raise ValueError(
                    f"`dataset_mixture` is set, so {', '.join(f'`{n}`' for n in beside)} would be ignored: each "
                    "mixture entry names its own dataset, `config` and `split`. Move them into the entries, or drop "
                    "the mixture."
                )
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
        default="sigmoid",
        metadata={
            "help": "The loss: a name of `adadpo.losses.LOSSES` (adadpo, dpo, simpo, ...; TRL's loss types by their "
            "names, `sigmoid` being DPO), or several (a YAML list, or `a,b` on the command line), summed with "
            "`loss_weights`. The scripts refuse a recipe that does not name it, outside alignment-handbook's "
            "`dpo/` and `orpo/` recipe folders; built in Python the default is TRL's, DPO."
        },
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
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Cut each prompt to its last this-many tokens (alignment-handbook's and older TRL's option; TRL "
            "1.x truncates only prompt+completion with `max_length`). Part of the reference-cache key."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "alignment-handbook's key. true: start over instead of resuming from the checkpoints in "
            "`output_dir`; they are moved aside into `output_dir/previous-runs/` (kept, never resumed from)."
        },
    )
    do_eval: bool | None = field(
        default=None,
        metadata={
            "help": "The final evaluation on the eval split: unset, it runs whenever there is an eval split; false "
            "skips it (alignment-handbook recipes set it); `eval_strategy` sets the evaluations during training."
        },
    )
    max_nonfinite_steps: int = field(
        default=3,
        metadata={"help": "Skip optimizer steps with a non-finite loss/gradient; stop after this many in a row."},
    )
    stop_signals: str = field(
        default="SIGTERM,SIGUSR1",
        metadata={
            "help": "On these signals (comma-separated; `none`: die at once, as without this) every process finishes "
            "the current optimizer step, a checkpoint is written, and the script exits with code 75 so that the "
            "same command (or a requeued job) resumes; see docs/reliability.md and scripts/slurm/launch.slurm."
        },
    )
    stop_push_grace_seconds: float = field(
        default=120.0,
        metadata={
            "help": "After a stop signal, how long to wait for that checkpoint's Hub push (`hub_strategy` "
            "checkpoint/all_checkpoints) before exiting; the local checkpoint is complete either way."
        },
    )
    oom_resplit: bool = field(
        default=True,
        metadata={
            "help": "When a micro-batch's forward runs out of memory, split it (pairs kept whole, packed rows "
            "re-packed) and accumulate the parts to the same optimizer step; later micro-batches of that size are "
            "split at once. false: an out-of-memory error stops the run as usual. See docs/reliability.md."
        },
    )

    def __post_init__(self):
        for name in ("eval_strategy", "save_strategy", "logging_strategy"):
            if getattr(self, name) is False:  # YAML 1.1 reads an unquoted `no` as false
                setattr(self, name, "no")
        float_fields = [name for name, hparam in LOSS_HPARAMS.items() if hparam.kind is float]
        for name in (*float_fields, "learning_rate", "weight_decay", "warmup_steps"):
            setattr(self, name, number_from_recipe(name, getattr(self, name)))
        if isinstance(self.loss_type, str) and "," in self.loss_type:  # `--loss_type=sigmoid,sft` on the command line
            self.loss_type = [name.strip() for name in self.loss_type.split(",")]
        asked_do_eval = self.do_eval
        super().__post_init__()  # TRL 1.16: a `loss_type` string becomes a list; `loss_weights` must match its length
        # transformers sets `do_eval` whenever `eval_strategy` is not "no", which would turn a recipe's `false` (skip
        # the final evaluation) back on; the recipe's own value stands
        self.do_eval = asked_do_eval
        self.loss_type = self.loss_type[0] if len(self.loss_type) == 1 else list(self.loss_type)
        # Builds the loss once as the trainer will: every name known, every value and combination checked
        loss = PreferenceLoss(self.loss_names, weights=self.loss_weights, **self.loss_hparams)
        if self.max_nonfinite_steps < 1:
            raise ValueError(f"`max_nonfinite_steps` must be >= 1, got {self.max_nonfinite_steps}.")
        parse_signal_names(self.stop_signals)
        if self.stop_push_grace_seconds < 0:
            raise ValueError(f"`stop_push_grace_seconds` must be >= 0, got {self.stop_push_grace_seconds}.")
        problems = [
            *refusal_messages(self, field_defaults(type(self))),
            *self._unread_hparams(loss),
            *option_conflicts(self, loss.needs_reference, self.loss_names),
        ]
        if problems:
            raise ValueError("This configuration cannot run as asked:\n  - " + "\n  - ".join(problems))
        if self.label_smoothing and {"sigmoid", "dpo"} & set(self.loss_names):
            warnings.warn(
                f"`label_smoothing: {self.label_smoothing}` with DPO trains conservative DPO (cDPO, Mitchell 2023), as "
                "TRL documents it; TRL 1.16's own `sigmoid` ignores the value, so a TRL 1.16 run with this config "
                "trained plain DPO.",
                stacklevel=2,
            )
        if not loss.needs_reference and (self.precompute_ref_log_probs or self.ref_logps_cache_dir):
            warnings.warn(
                f"`{loss.name}` is reference-free: `precompute_ref_log_probs` / `ref_logps_cache_dir` are "
                "ignored and no reference model is loaded.",
                stacklevel=2,
            )
            self.precompute_ref_log_probs = False
            self.ref_logps_cache_dir = None

    @property
    def loss_names(self) -> list[str]:
        """The loss, or the losses summed (`loss_weights`), as named."""
        return [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)

    def _unread_hparams(self, loss: PreferenceLoss) -> list[str]:
        """Loss hyperparameters set away from their default that no loss of this run reads."""
        read = {name for spec in loss.specs for name in spec.hparams}
        return [
            f"`{name}: {value!r}` is not read by `{loss.name}`; the losses that read it: "
            + ", ".join(n for n, spec in LOSS_SPECS.items() if name in spec.hparams)
            for name, value in self.loss_hparams.items()
            if name not in read and value != LOSS_HPARAMS[name].default
        ]

    @property
    def loss_hparams(self) -> dict[str, Any]:
        """Every loss hyperparameter, by config name, as `adadpo.losses.preference_loss` takes them."""
        return {name: getattr(self, name) for name in LOSS_HPARAMS}
