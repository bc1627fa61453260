"""Tokenizer and policy model from a `trl.ModelConfig`, with the errors people hit most often spelled out."""

import logging
import os

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, ProcessorMixin
from trl import ModelConfig, get_quantization_config


logger = logging.getLogger(__name__)


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or os.path.isabs(path) or path.count("/") > 1


def check_model_path(path: str | None) -> None:
    if not path:
        raise ValueError("Set `model_name_or_path` in the recipe (a Hub id or a local model folder).")
    if _looks_local(path) and not os.path.isdir(os.path.expanduser(path)):
        raise FileNotFoundError(
            f"Model folder {path!r} does not exist. Fix `model_name_or_path` (a local folder with config.json, or a "
            "Hub id such as `org/name`)."
        )


def tokenizer_of(processing_class) -> PreTrainedTokenizerBase:
    """The tokenizer of a `processing_class`: itself, or the one a processor (multimodal models) wraps."""
    return processing_class.tokenizer if isinstance(processing_class, ProcessorMixin) else processing_class


def get_tokenizer(model_args: ModelConfig, chat_template: str | None = None, trust_remote_code: bool = False):
    check_model_path(model_args.model_name_or_path)
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path, revision=model_args.model_revision, trust_remote_code=trust_remote_code
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_init_kwargs(model_args: ModelConfig, training_args) -> dict:
    """`from_pretrained` kwargs shared by the policy and (for reference-based losses) the reference model."""
    dtype = model_args.dtype
    if dtype not in (None, "auto") and not isinstance(dtype, torch.dtype):
        if not hasattr(torch, str(dtype)):
            raise ValueError(f"`dtype` must be auto, bfloat16, float16 or float32, got {dtype!r}.")
        dtype = getattr(torch, dtype)
    quantization_config = get_quantization_config(model_args)
    kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": dtype,
        "trust_remote_code": training_args.trust_remote_code,
        "use_cache": not training_args.gradient_checkpointing,
    }
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": PartialState().local_process_index}  # k-bit weights live on this rank's GPU
    return kwargs


def get_model(model_args: ModelConfig, training_args):
    check_model_path(model_args.model_name_or_path)
    kwargs = model_init_kwargs(model_args, training_args)
    # TRL builds the reference from `model_init_kwargs` too, so the policy must get them: one model, two copies
    extra = dict(training_args.model_init_kwargs or {})
    clashes = {k: (v, kwargs[k]) for k, v in extra.items() if kwargs.get(k) is not None and str(v) != str(kwargs[k])}
    if clashes:
        raise ValueError(
            "`model_init_kwargs` and the model arguments disagree: "
            + "; ".join(f"{k}: {mine!r} vs {theirs!r}" for k, (mine, theirs) in clashes.items())
            + ". Set each once: as its own recipe key (`dtype`, `attn_implementation`, `model_revision`, ...) where "
            "there is one, in `model_init_kwargs` otherwise."
        )
    kwargs |= extra
    logger.info("Loading %s with %s", model_args.model_name_or_path, {k: str(v) for k, v in kwargs.items()})
    return AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
