"""Config validation: global batch, loss hyperparameters, YAML pitfalls, recipe keys, double BOS."""

import dataclasses

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from adadpo.config import AdaDPOConfig
from adadpo.losses import LOSS_HPARAM_DEFAULTS, LOSSES
from adadpo.recipe import parse_args
from adadpo.training.launch_checks import apply_launch, check_process_group, derive_gradient_accumulation


def config(tmp_path, **kwargs):
    return AdaDPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", **kwargs)


@pytest.mark.parametrize("world, per_device, expected", [(8, 2, 8), (4, 2, 16), (1, 4, 32), (16, 8, 1)])
def test_gradient_accumulation_keeps_the_global_batch(world, per_device, expected):
    assert derive_gradient_accumulation(128, world, per_device) == expected


def test_global_batch_not_divisible_names_the_fix():
    with pytest.raises(
        ValueError, match=r"multiple of the data-parallel size \(3\) x per_device_train_batch_size \(2\) = 6"
    ):
        derive_gradient_accumulation(128, 3, 2)


def test_gradient_accumulation_is_derived_where_the_run_is_built_not_by_the_config(tmp_path):
    """Building a config reads nothing of the launch: the same recipe gives the same config however it is launched,
    and a wrong launch is refused by `apply_launch` (called by `build_trainer`), not by the dataclass."""
    cfg = config(tmp_path, global_batch_size=16, per_device_train_batch_size=2)
    assert cfg.gradient_accumulation_steps == 1
    apply_launch(cfg, environ={})
    assert cfg.gradient_accumulation_steps == 8
    launched_apart = config(tmp_path, per_device_train_batch_size=2)  # two processes that never joined one group
    with pytest.raises(ValueError, match="set `use_cpu: true`"):
        apply_launch(launched_apart, environ={"WORLD_SIZE": "2"})


def test_config_builds_under_a_launch_that_apply_launch_refuses(tmp_path, monkeypatch):
    """FSDP asked for, CPU processes: refused when the run is built, not when a config is made (e.g. by a test or
    `scripts/sweep.py` reading a recipe on a login node)."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert config(tmp_path, global_batch_size=16).gradient_accumulation_steps == 1


def test_derived_accumulation_reaches_a_deepspeed_config_given_in_the_recipe(tmp_path):
    """With `deepspeed: <config>` in the recipe, transformers fills the config's "auto" entries when the arguments
    are built; the accumulation derived later must replace the value filled then, or DeepSpeed trains another batch."""
    ds = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "train_batch_size": "auto"}
    ds["zero_optimization"] = {"stage": 2}
    cfg = config(tmp_path, global_batch_size=16, per_device_train_batch_size=2, deepspeed=ds)
    assert cfg.hf_deepspeed_config.config["gradient_accumulation_steps"] == 1
    apply_launch(cfg, environ={})
    assert cfg.hf_deepspeed_config.config["gradient_accumulation_steps"] == 8
    assert cfg.hf_deepspeed_config.config["train_batch_size"] == 16
    assert cfg.deepspeed_plugin.deepspeed_config["gradient_accumulation_steps"] == 8


def test_every_loss_hyperparameter_is_a_config_field_with_the_same_default():
    fields = {f.name: f for f in dataclasses.fields(AdaDPOConfig)}
    for name, default in LOSS_HPARAM_DEFAULTS.items():
        assert name in fields, name
        if name != "beta":  # TRL owns `beta` (same default, 0.1)
            assert fields[name].default == default, name
        assert fields[name].metadata.get("help") or name == "beta"


def test_unknown_loss_lists_every_name(tmp_path):
    with pytest.raises(ValueError) as error:
        config(tmp_path, loss_type="adpo")
    assert all(name in str(error.value) for name in LOSSES)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("beta", 0.0, "beta"),
        ("beta", -1.0, "beta"),
        ("adadpo_clip", 0.0, "adadpo_clip"),
        ("alpha_dpo_alpha", -0.1, "alpha_dpo_alpha"),
        ("simpo_gamma", float("inf"), "simpo_gamma"),
        ("adadpo_balance", "both", "adadpo_balance"),
        ("nll_average", "tokens", "nll_average"),
    ],
)
def test_bad_hyperparameters_are_refused(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        config(tmp_path, **{field: value})


def test_yaml_number_read_as_string_is_coerced_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="write `5.0e-7`"):
        cfg = config(tmp_path, learning_rate="5e-7", beta="5e-2")
    assert cfg.learning_rate == 5e-7 and isinstance(cfg.beta, float) and cfg.beta == 0.05
    with pytest.raises(ValueError, match="`beta` must be a number"):
        config(tmp_path, beta="high")


def test_reference_free_loss_warns_that_reference_options_are_ignored(tmp_path):
    with pytest.warns(UserWarning, match="reference-free"):
        cfg = config(tmp_path, loss_type="simpo", precompute_ref_log_probs=True, ref_logps_cache_dir="x")
    assert cfg.precompute_ref_log_probs is False and cfg.ref_logps_cache_dir is None


@pytest.mark.parametrize("key, hint", [("gamma", "use `simpo_gamma`"), ("rpo_alpha", "use `sft_weight`")])
def test_renamed_recipe_keys_get_a_hint(tmp_path, key, hint):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model_name_or_path": "x", "dataset_name": "y", key: 1}))
    with pytest.raises(ValueError, match=f"`{key}`: .*{hint}"):
        parse_args(["--config", str(recipe), "--output_dir", str(tmp_path)])


@pytest.mark.parametrize(
    "old, value, new, expected",
    [("torch_dtype", "bfloat16", "dtype", "bfloat16"), ("warmup_ratio", 0.1, "warmup_steps", 0.1),
     ("hub_model_revision", "v2", "hub_revision", "v2")],
)  # fmt: skip
def test_keys_renamed_upstream_are_read_under_their_new_name_with_a_warning(tmp_path, old, value, new, expected):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model_name_or_path": "x", "dataset_name": "y", "loss_type": "dpo", old: value}))
    argv = ["--config", str(recipe), "--output_dir", str(tmp_path), "--use_cpu=true", "--bf16=false"]
    cli = ["--model_name_or_path=x", "--dataset_name=y", "--loss_type=dpo", *argv[2:], f"--{old}={value}"]
    for source, args in (("recipe", argv), ("command line", cli)):
        with pytest.warns(UserWarning, match=f"`{old}` in .* is read as `{new}`"):
            parsed = parse_args(args)
        assert [getattr(config, new) for config in parsed if hasattr(config, new)] == [expected], source


def test_a_warmup_ratio_of_one_or_more_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model_name_or_path": "x", "dataset_name": "y", "warmup_ratio": 1.0}))
    with pytest.raises(ValueError, match=r"`warmup_ratio` .* must be in \[0, 1\)"):
        parse_args(["--config", str(recipe), "--output_dir", str(tmp_path)])


def test_unknown_key_on_the_command_line(tmp_path):
    with pytest.raises(ValueError, match="lerning_rate"):
        parse_args(["--model_name_or_path=x", "--dataset_name=y", "--lerning_rate=1.0"])


def test_double_bos_is_reduced_to_one(tiny_model_dir, tmp_path):
    """A template that already contains BOS, tokenized by a tokenizer that adds BOS, must not give two."""
    from datasets import Dataset
    from tokenizers import processors

    from adadpo.training.trainer import AdaDPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, bos_id)]
    )
    rows = [{"prompt": f"{bos}Q: cat {i}? A:", "chosen": " yes", "rejected": " no no"} for i in range(4)]
    trainer = AdaDPOTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=config(tmp_path, loss_type="simpo", max_steps=1, per_device_train_batch_size=2),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    for ids in trainer.train_dataset["prompt_ids"]:
        assert ids[0] == bos_id and ids[1] != bos_id


def test_processes_that_do_not_form_a_group_are_refused():
    check_process_group(launched=2, world_size=2)
    check_process_group(launched=1, world_size=1)
    with pytest.raises(ValueError, match="set `use_cpu: true`"):
        check_process_group(launched=2, world_size=1)


def test_unquoted_no_strategy_from_yaml_means_no(tmp_path):
    cfg = config(tmp_path, eval_strategy=False, save_strategy=False)
    assert cfg.eval_strategy == "no" and cfg.save_strategy == "no"
