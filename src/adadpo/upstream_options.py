"""Every field of the config classes we inherit (TRL 1.16's `DPOConfig` with transformers' `TrainingArguments`,
TRL's `ModelConfig` and `ScriptArguments`), and what happens to it here: applied by our code, applied by TRL or
transformers unchanged, or refused (set to anything but its default) with the reason and what to use instead.

An option a user sets must take effect or be refused; one accepted and ignored is a wrong result. This table is the
record of that promise: `refusal_messages` enforces the refusals when a config is built (before anything is loaded
or written), docs/upstream_options.md is generated from it, and tests/test_upstream_options.py fails when a TRL or
transformers upgrade adds a field nobody classified here. Options with conditions (refused only in some
combinations) are applied, and their check is named in the note.
"""

import dataclasses
from dataclasses import dataclass


OURS, TRL, TRANSFORMERS, REFUSED = "adadpo", "TRL", "transformers", "refused"


@dataclass(frozen=True)
class Option:
    status: str  # OURS: our code applies it (tested); TRL / TRANSFORMERS: applied by them unchanged; REFUSED
    note: str  # what it does here; for REFUSED: why, and what to use instead


def _ours(note: str) -> Option:
    return Option(OURS, note)


def _trl(note: str = "applied by TRL's DPOTrainer") -> Option:
    return Option(TRL, note)


def _tf(note: str = "applied by transformers' Trainer") -> Option:
    return Option(TRANSFORMERS, note)


def _refused(note: str) -> Option:
    return Option(REFUSED, note)


# ---- TRL's DPOConfig (beyond TrainingArguments) -----------------------------------------------------------------------
DPO_CONFIG = {
    "model_init_kwargs": _ours("applied to the policy and, through TRL, to the reference model (same kwargs)"),
    "trust_remote_code": _ours("passed to the tokenizer, policy and reference loads"),
    "router_aux_loss_coef": _ours("MoE models: the router's load-balancing loss is added with this weight, as TRL"),
    "disable_dropout": _trl(),
    "dataset_num_proc": _trl("processes for TRL's tokenization map"),
    "max_length": _ours("truncation of prompt+completion by our collators (`truncation_mode`)"),
    "truncation_mode": _ours("keep_start / keep_end, in our collators; part of the reference-cache key"),
    "padding_free": _ours("packed rows (adadpo.training.collators), flash varlen / masked sdpa"),
    "pad_to_multiple_of": _ours("pads each micro-batch's length (padded) or row length (packed) to a multiple"),
    "precompute_ref_log_probs": _ours("one reference pass before training, optionally cached (`ref_logps_cache_dir`)"),
    "precompute_ref_batch_size": _ours("batch size of that pass"),
    "loss_type": _ours("a loss of adadpo.losses (TRL's names included), or a list combined with `loss_weights`"),
    "loss_weights": _ours("weights of a list of loss types (e.g. MPO's [sigmoid, bco_pair, sft])"),
    "ld_alpha": _ours("LD-DPO: weight of the log-probs past the shorter completion (reference-based losses only)"),
    "f_divergence_type": _ours("the log-ratio score of the DPO-form losses (reverse_kl, forward_kl, js, alpha)"),
    "f_alpha_divergence_coef": _ours("alpha of `f_divergence_type: alpha_divergence`"),
    "label_smoothing": _ours("cDPO / robust DPO / EXO / AOT noise rate, for the losses that define it"),
    "beta": _ours("declared in adadpo.losses.hparams like every loss hyperparameter"),
    "use_weighting": _ours("WPO weights on each pair's loss (reference-based losses only)"),
    "discopop_tau": _ours("tau of `loss_type: discopop`"),
    "activation_offloading": _trl("TRL wraps each training step in its activation-offloading context"),
    "sync_ref_model": _ours(
        "TR-DPO's reference sync (TRL's callback); refused with a precomputed or cached reference"
    ),
    "ref_model_mixup_alpha": _trl("alpha of the TR-DPO sync"),
    "ref_model_sync_steps": _trl("steps between TR-DPO syncs"),
    "pad_token": _ours("the padding token (deprecated by TRL; never scored, so it changes no number)"),
}

# ---- transformers' TrainingArguments ----------------------------------------------------------------------------------
TRAINING_ARGUMENTS = {
    "output_dir": _ours("the run folder (adadpo.run_folder)"),
    "per_device_train_batch_size": _tf("pairs per micro-batch and process"),
    "num_train_epochs": _tf(),
    "max_steps": _tf(),
    "learning_rate": _tf(),
    "lr_scheduler_type": _tf(),
    "lr_scheduler_kwargs": _tf(),
    "warmup_steps": _tf("a number >= 1 is steps, below 1 a ratio of the total (the old `warmup_ratio`)"),
    "optim": _tf(),
    "optim_args": _tf(),
    "weight_decay": _tf(),
    "adam_beta1": _tf(),
    "adam_beta2": _tf(),
    "adam_epsilon": _tf(),
    "optim_target_modules": _tf(),
    "gradient_accumulation_steps": _ours("derived from `global_batch_size` when that is set, else as given"),
    "average_tokens_across_devices": _tf(
        "no effect: every loss here is a mean over pairs (TRL sets model_accepts_loss_kwargs = False)"
    ),
    "max_grad_norm": _tf(),
    "label_smoothing_factor": _refused(
        "transformers' label smoother runs only inside its own compute_loss, which "
        "preference losses replace; use `label_smoothing` (cDPO, robust, EXO, AOT)"
    ),
    "bf16": _tf(),
    "fp16": _tf(),
    "bf16_full_eval": _tf(),
    "fp16_full_eval": _tf(),
    "tf32": _tf(),
    "activation_checkpointing": _tf("with our reference forwards switched out of it (no recompute without grad)"),
    "activation_checkpointing_kwargs": _tf(),
    "gradient_checkpointing": _tf("transformers' deprecated alias of `activation_checkpointing`"),
    "gradient_checkpointing_kwargs": _tf("transformers' deprecated alias of `activation_checkpointing_kwargs`"),
    "torch_compile": _tf(),
    "torch_compile_backend": _tf(),
    "torch_compile_mode": _tf(),
    "use_liger_kernel": _trl("Liger's layer kernels; TRL keeps its fused LM head (no fused cross-entropy)"),
    "liger_kernel_config": _trl("checked by TRL: `fused_linear_cross_entropy` is refused"),
    "use_cache": _refused(
        "training forwards run without a KV cache (packing needs it off; nothing to reuse between "
        "steps); the saved model gets `use_cache: true` for generation"
    ),
    "neftune_noise_alpha": _tf(
        "noise on the policy's input embeddings while training; refused with a PEFT policy whose live reference is "
        "the same model with its adapter off (the reference would get the noise too)"
    ),
    "torch_empty_cache_steps": _tf(),
    "auto_find_batch_size": _refused(
        "on OOM it halves `per_device_train_batch_size` without re-deriving the "
        "accumulation, so the global batch would shrink silently; size the batch with "
        "scripts/preflight.py (it measures memory on the longest micro-batch)"
    ),
    "logging_strategy": _tf(),
    "logging_steps": _tf(),
    "logging_first_step": _tf(),
    "log_on_each_node": _tf(),
    "logging_nan_inf_filter": _tf(),
    "include_num_input_tokens_seen": _tf("counts `input_ids` tokens (packed rows: row padding included)"),
    "log_level": _tf(),
    "log_level_replica": _tf(),
    "disable_tqdm": _tf(),
    "report_to": _ours("transformers' trackers; the AdaDPO metrics are logged like every other"),
    "run_name": _tf(),
    "project": _tf("the trackio / wandb project"),
    "trackio_space_id": _tf(),
    "trackio_bucket_id": _tf(),
    "trackio_static_space_id": _tf(),
    "eval_strategy": _tf(),
    "eval_steps": _tf(),
    "eval_delay": _tf(),
    "per_device_eval_batch_size": _tf(),
    "prediction_loss_only": _tf(),
    "eval_on_start": _tf(),
    "eval_do_concat_batches": _tf(),
    "eval_use_gather_object": _tf(),
    "eval_accumulation_steps": _tf(),
    "include_for_metrics": _refused(
        "feeds a `compute_metrics` function, which scripts/run_adadpo.py has none of "
        "(its eval metrics are the loss's own, logged by the trainer)"
    ),
    "batch_eval_metrics": _refused("likewise for a `compute_metrics` function: there is none here"),
    "save_only_model": _tf("then a run cannot resume (no optimizer state)"),
    "save_strategy": _tf(),
    "save_steps": _tf(),
    "save_on_each_node": _tf(),
    "save_total_limit": _ours("rotation after each checkpoint is complete (adadpo.training.checkpointing)"),
    "enable_jit_checkpoint": _tf(),
    "push_to_hub": _ours("the final push after the complete local save, and checkpoint pushes (`hub_strategy`)"),
    "hub_token": _ours("kept in memory, never logged or written"),
    "hub_private_repo": _ours("used when the repository is created"),
    "hub_model_id": _ours("the repository; default: the run folder's name"),
    "hub_strategy": _ours("every_save / checkpoint / all_checkpoints / end, pushed in the background"),
    "hub_always_push": _refused(
        "checkpoint pushes here never skip a save: a newer checkpoint replaces a queued "
        "one, so there is nothing to force"
    ),
    "hub_revision": _ours("the branch pushed to"),
    "load_best_model_at_end": _tf("with our staged checkpoints' best-model path kept right"),
    "metric_for_best_model": _tf(),
    "greater_is_better": _tf(),
    "ignore_data_skip": _tf(),
    "restore_callback_states_from_checkpoint": _tf(),
    "full_determinism": _tf(),
    "seed": _ours("also draws the train/test split"),
    "data_seed": _tf(),
    "use_cpu": _tf(),
    "accelerator_config": _tf(),
    "parallelism_config": _refused(
        "as a training argument; sequence parallelism is set in the accelerate config's `parallelism_config` block "
        "(accelerate_configs/deepspeed_zero3_sp8.yaml, docs/long_context.md), proven equal to one process; tensor and "
        "context parallelism split what the losses sum per sequence and are refused there too"
    ),
    "dataloader_drop_last": _tf(),
    "dataloader_num_workers": _tf(),
    "dataloader_pin_memory": _tf(),
    "dataloader_persistent_workers": _tf(),
    "dataloader_prefetch_factor": _tf(),
    "dataloader_multiprocessing_context": _tf(),
    "dataloader_in_order": _tf(),
    "remove_unused_columns": _ours("the collators' per-pair columns are always kept"),
    "label_names": _refused("preference batches have no label columns; there is nothing to name"),
    "train_sampling_strategy": _ours(
        "random / sequential; `group_by_length` is refused (it needs an `input_ids` "
        "length per row; pack with `padding_free` instead)"
    ),
    "length_column_name": _refused("only read by `group_by_length`, which is refused"),
    "ddp_find_unused_parameters": _tf(),
    "ddp_bucket_cap_mb": _tf(),
    "ddp_broadcast_buffers": _tf(),
    "ddp_static_graph": _tf(),
    "ddp_backend": _tf(),
    "ddp_timeout": _tf(),
    "fsdp": _tf("on GPUs; FSDP launched on CPU is refused (accelerate would run plain DDP)"),
    "fsdp_config": _tf(),
    "deepspeed": _ours("transformers' DeepSpeed config, refreshed after the accumulation is derived"),
    "debug": _tf(),
    "skip_memory_metrics": _tf(),
    "do_train": _ours("scripts/run_adadpo.py always trains (the handbook's run_dpo.py does not read it either)"),
    "do_eval": _ours("the final evaluation on the eval split; `false` skips it (unset: it runs)"),
    "do_predict": _refused("there is no prediction stage; evaluate with scripts/evaluate.py"),
    "resume_from_checkpoint": _ours(
        "a checkpoint folder, `hub` (the newest pushed checkpoint) or `auto` (the newest local one, else the Hub's, "
        "else a fresh start: the same command requeued)"
    ),
    "local_rank": _tf("set by the launcher"),
}

# ---- TRL's ModelConfig --------------------------------------------------------------------------------------------------
MODEL_CONFIG = {
    "model_name_or_path": _ours("the policy (and the reference for reference-based losses)"),
    "model_revision": _ours("the revision loaded; part of the reference-cache key"),
    "dtype": _ours("the load dtype of policy and reference"),
    "attn_implementation": _ours("the attention kernel; packing accepts only those that keep sequences apart"),
    "use_peft": _ours("LoRA through TRL's `get_peft_config`; the reference is the adapter switched off"),
    "lora_r": _trl(),
    "lora_alpha": _trl(),
    "lora_dropout": _trl(),
    "lora_target_modules": _trl(),
    "lora_target_parameters": _trl(),
    "lora_modules_to_save": _trl(),
    "lora_task_type": _trl(),
    "use_rslora": _trl(),
    "use_dora": _trl(),
    "load_in_8bit": _ours("bitsandbytes config through TRL's `get_quantization_config`"),
    "load_in_4bit": _ours("likewise"),
    "bnb_4bit_quant_type": _trl(),
    "use_bnb_nested_quant": _trl(),
    "bnb_4bit_quant_storage": _trl(),
}

# ---- TRL's ScriptArguments ----------------------------------------------------------------------------------------------
SCRIPT_ARGUMENTS = {
    "dataset_name": _ours("a Hub id or a local file / folder"),
    "dataset_config": _ours("the dataset's configuration name (a mixture names its own: refused beside one)"),
    "dataset_train_split": _ours("the split trained on (a mixture names its own: refused beside one)"),
    "dataset_test_split": _ours(
        "the split evaluated on, when the dataset has it and no `test_split_size` is set (refused beside a mixture)"
    ),
    "dataset_streaming": _refused(
        "rows are validated, counted and split before training, which needs the whole "
        "split; save a local copy (`save_to_disk`) and point `dataset_name` at it"
    ),
    "ignore_bias_buffers": _refused(
        "a DDP workaround of TRL's example scripts for old models; transformers 5 models need none"
    ),
}

UPSTREAM_OPTIONS: dict[str, Option] = {**DPO_CONFIG, **TRAINING_ARGUMENTS, **MODEL_CONFIG, **SCRIPT_ARGUMENTS}


def field_defaults(cls) -> dict:
    """Each dataclass field's default value (a default factory called)."""
    return {
        f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for f in dataclasses.fields(cls)
    }


def refusal_messages(config, defaults: dict) -> list[str]:
    """One line per refused option that `config` sets to anything but its default (`defaults`: field -> default)."""
    return [
        f"`{name}: {getattr(config, name)!r}` is not supported: {option.note}."
        for name, option in UPSTREAM_OPTIONS.items()
        if option.status == REFUSED and name in defaults and getattr(config, name) != defaults[name]
    ]


def option_conflicts(args, needs_reference: bool, loss_names: list[str]) -> list[str]:
    """The applied options refused in some combinations (each named in its note above), as messages."""
    problems = []
    if args.resume_from_checkpoint == "auto" and args.overwrite_output_dir:
        problems.append(
            "`resume_from_checkpoint: auto` continues the run in `output_dir`, `overwrite_output_dir: true` starts "
            "it over: drop one of them (a requeued job needs `auto` alone)"
        )
    if args.use_weighting and not needs_reference:
        problems.append(
            "`use_weighting` (WPO) weighs each pair by the policy's probability of both responses relative to "
            f"their reference-free losses' own terms: not defined for `{'+'.join(loss_names)}`; use a "
            "reference-based loss (e.g. sigmoid, adadpo) or drop it"
        )
    if args.use_weighting and {"aot", "aot_unpaired"} & set(loss_names):
        problems.append(
            "`use_weighting` (WPO) with `aot` / `aot_unpaired`: those losses sort the batch's log-ratios, so a "
            "per-pair weight would land on another pair; drop one of them"
        )
    if args.ld_alpha is not None:
        if not 0 <= args.ld_alpha <= 1:
            problems.append(f"`ld_alpha` must be in [0, 1], got {args.ld_alpha}")
        if not needs_reference:
            problems.append(
                "`ld_alpha` (LD-DPO) down-weights the log-ratio past the shorter completion; the reference-free "
                f"`{'+'.join(loss_names)}` has no log-ratio: drop it, or use a reference-based loss"
            )
        if "sft" in loss_names:
            problems.append(
                "`ld_alpha` with the `sft` loss type: TRL's sft term reads the unweighted log-probs while the "
                "others read the LD-weighted ones; train them apart or drop `ld_alpha`"
            )
    if args.sync_ref_model and (args.precompute_ref_log_probs or args.ref_logps_cache_dir):
        problems.append(
            "`sync_ref_model` (TR-DPO) moves the reference during training, so precomputed or cached reference "
            "log-probs would go stale: set `precompute_ref_log_probs: false` and drop `ref_logps_cache_dir`"
        )
    if args.sync_ref_model and not needs_reference:
        problems.append(f"`sync_ref_model`: `{'+'.join(loss_names)}` uses no reference model to sync")
    if args.f_divergence_type != "alpha_divergence" and args.f_alpha_divergence_coef != 0.5:
        problems.append(
            f"`f_alpha_divergence_coef: {args.f_alpha_divergence_coef}` is read only with "
            "`f_divergence_type: alpha_divergence`"
        )
    if str(getattr(args.train_sampling_strategy, "value", args.train_sampling_strategy)) == "group_by_length":
        problems.append(
            "`train_sampling_strategy: group_by_length` needs an `input_ids` length per row, which preference pairs "
            "do not have; pack instead (`padding_free: true`), which wastes no compute on padding"
        )
    return problems


def markdown_table() -> str:
    """docs/upstream_options.md: `python -m adadpo.upstream_options > docs/upstream_options.md` (a test keeps it current)."""
    groups = [
        ("TRL's `DPOConfig` (beyond `TrainingArguments`)", DPO_CONFIG),
        ("transformers' `TrainingArguments`", TRAINING_ARGUMENTS),
        ("TRL's `ModelConfig`", MODEL_CONFIG),
        ("TRL's `ScriptArguments`", SCRIPT_ARGUMENTS),
    ]
    counts = {
        status: sum(o.status == status for o in UPSTREAM_OPTIONS.values())
        for status in (OURS, TRL, TRANSFORMERS, REFUSED)
    }
    lines = [
        "# Every upstream option, and what happens to it",
        "",
        "<!-- Generated from src/adadpo/upstream_options.py: python -m adadpo.upstream_options > docs/upstream_options.md -->",
        "",
        "A recipe is read into TRL's and transformers' config classes plus this project's fields. Every field of theirs "
        "is listed here: applied by this project's code (`adadpo`, each with a test), applied by TRL or transformers "
        "unchanged, or **refused** when set to anything but its default, before a model is loaded or a file is "
        "written, with the reason and what to use instead. Applied options refused only in some combinations say so. "
        "A test fails when a TRL or transformers upgrade adds a field that is not classified here.",
        "",
        f"{len(UPSTREAM_OPTIONS)} fields: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".",
    ]
    for title, options in groups:
        lines += ["", f"## {title}", "", "| field | applied by | what it does here |", "|---|---|---|"]
        lines += [f"| `{name}` | {o.status} | {o.note} |" for name, o in options.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
