"""What sequence parallelism refuses, before anything is loaded or written, and why each refusal names its fix."""

from types import SimpleNamespace

import pytest
from transformers import LlamaConfig, MixtralConfig

from adadpo.training.sequence_parallel import (
    LaunchParallelism,
    check_launch,
    check_model,
    check_same_attention,
    check_tensor_parallel,
    fixed_row_length,
)
from tests.helpers.runs import tiny_run_args, train


SP2 = LaunchParallelism(sp_size=2, dp_replicate_size=1)


def args(**overrides):
    base = {"world_size": 2, "padding_free": True, "per_device_train_batch_size": 1, "max_tokens_per_batch": None,
            "disable_dropout": True, "use_cpu": False, "max_length": 1024, "pad_to_multiple_of": None,
            "dataloader_drop_last": True}  # fmt: skip
    return SimpleNamespace(**{**base, **overrides})


def test_the_launch_is_read_as_accelerate_reads_it():
    environ = {"ACCELERATE_USE_PARALLELISM_CONFIG": "true", "PARALLELISM_CONFIG_SP_SIZE": "4",
               "PARALLELISM_CONFIG_DP_REPLICATE_SIZE": "2", "PARALLELISM_CONFIG_SP_BACKEND": "deepspeed"}  # fmt: skip
    assert LaunchParallelism.from_environ(environ) == LaunchParallelism(sp_size=4, dp_replicate_size=2)
    # without accelerate's switch its variables mean nothing (accelerate builds no parallelism config)
    assert not LaunchParallelism.from_environ({"PARALLELISM_CONFIG_SP_SIZE": "4"}).enabled


def test_a_well_formed_launch_passes():
    check_launch(SP2, args(), uses_deepspeed=True)
    check_launch(LaunchParallelism(sp_size=4, dp_replicate_size=2), args(world_size=8), uses_deepspeed=True)


@pytest.mark.parametrize(
    "parallelism, overrides, deepspeed, message",
    [
        (LaunchParallelism(cp_size=2), {}, True, "context and tensor parallelism would split"),
        (LaunchParallelism(tp_size=2), {}, True, "context and tensor parallelism would split"),
        (SP2, {}, False, "runs only under DeepSpeed"),
        (LaunchParallelism(sp_size=2, dp_shard_size=2), {"world_size": 4}, True, "dp_shard_size` is FSDP's"),
        (SP2, {"world_size": 3}, True, "3 processes do not split into groups of 2"),
        (SP2, {"world_size": 4}, True, "set `parallelism_config_dp_replicate_size: 2`"),
        (SP2, {"padding_free": False}, True, "set `padding_free: true`"),
        (SP2, {"per_device_train_batch_size": 2}, True, "set `per_device_train_batch_size: 1`"),
        (SP2, {"max_tokens_per_batch": 4096}, True, "`max_tokens_per_batch` makes several rows"),
        (SP2, {"disable_dropout": False}, True, "set `disable_dropout: true`"),
        (SP2, {"dataloader_drop_last": False}, True, "set `dataloader_drop_last: true`"),
        (SP2, {"use_cpu": True, "max_length": None}, True, "on CPU every row is padded to 2 x `max_length`"),
    ],
)
def test_a_launch_the_losses_would_not_see_whole_is_refused(parallelism, overrides, deepspeed, message):
    with pytest.raises(ValueError, match=message):
        check_launch(parallelism, args(**overrides), uses_deepspeed=deepspeed)


@pytest.mark.parametrize(
    "config, attn, message",
    [
        (LlamaConfig(num_attention_heads=3, num_key_value_heads=3, hidden_size=24), "flash_attention_2",
         "its 3 attention heads do not split over 2 ranks"),
        (LlamaConfig(num_attention_heads=12, num_key_value_heads=3, hidden_size=24), "flash_attention_2",
         "its 3 key/value heads neither split over 2 ranks nor divide 2"),
        (LlamaConfig(num_attention_heads=4, num_key_value_heads=2, hidden_size=32), "sdpa",
         "DeepSpeed's Ulysses attention drops the attention mask"),
        (MixtralConfig(num_attention_heads=4, num_key_value_heads=2, hidden_size=32, output_router_logits=True),
         "flash_attention_2", "MoE router loss would be computed per slice"),
    ],
)  # fmt: skip
def test_a_model_the_group_cannot_split_is_refused(config, attn, message):
    with pytest.raises(ValueError, match=message):
        check_model(SP2, config, attn)


def test_a_model_it_can_split_passes():
    check_model(SP2, LlamaConfig(num_attention_heads=4, num_key_value_heads=1, hidden_size=32), "flash_attention_2")
    check_model(SP2, LlamaConfig(num_attention_heads=4, num_key_value_heads=2), "kernels-community/flash-attn2")
    check_model(LaunchParallelism(), LlamaConfig(num_attention_heads=3, hidden_size=24), "sdpa")  # no SP: no check


def test_training_rows_are_padded_to_one_length_on_cpu_only():
    assert fixed_row_length(SP2, args(use_cpu=True, max_length=63)) == 126
    assert fixed_row_length(SP2, args(use_cpu=True, max_length=63, pad_to_multiple_of=8)) == 128
    assert fixed_row_length(SP2, args()) is None and fixed_row_length(LaunchParallelism(), args(use_cpu=True)) is None


def test_a_refused_launch_stops_before_the_output_folder_exists(
    run_adadpo, tiny_model_dir, pref_jsonl, tmp_path, monkeypatch
):
    monkeypatch.setenv("ACCELERATE_USE_PARALLELISM_CONFIG", "true")
    monkeypatch.setenv("PARALLELISM_CONFIG_SP_SIZE", "2")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="Sequence parallelism .* runs only under DeepSpeed"):
        train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, out, padding_free=True))
    assert not out.exists()


def test_a_model_loaded_with_tensor_parallelism_is_refused():
    check_tensor_parallel(SimpleNamespace(tp_size=None))
    with pytest.raises(ValueError, match=r"tensor parallelism \(tp_size=2, from `tp_plan`"):
        check_tensor_parallel(SimpleNamespace(tp_size=2))


def test_a_reference_with_another_attention_kernel_is_refused():
    check_same_attention("flash_attention_2", "flash_attention_2")
    with pytest.raises(ValueError, match="the reference model must use the policy's attention kernel"):
        check_same_attention("flash_attention_2", "sdpa")


@pytest.mark.parametrize("data_parallel, per_device, refused", [(1, 1, True), (2, 1, False), (1, 2, False)])
def test_alpha_dpo_needs_two_pairs_per_gathered_micro_batch(data_parallel, per_device, refused):
    """Its running std needs two margins; a group of SP ranks trains one pair at a time."""
    from adadpo.training.launch_checks import check_alpha_dpo_batch

    training = SimpleNamespace(per_device_train_batch_size=per_device, loss_names=["alpha_dpo"])
    if refused:
        with pytest.raises(ValueError, match="the std would never be estimated"):
            check_alpha_dpo_batch(training, data_parallel)
    else:
        check_alpha_dpo_batch(training, data_parallel)
    check_alpha_dpo_batch(SimpleNamespace(per_device_train_batch_size=1, loss_names=["adadpo"]), 1)
