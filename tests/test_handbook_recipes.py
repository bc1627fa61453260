"""alignment-handbook's current DPO / APO / ORPO recipes, written here in the handbook's own format (not copied from
it), run through `scripts/run_adadpo.py` for one step with only the hardware keys changed: the model is a tiny local
one, `flash_attention_2` becomes `sdpa`, no bf16, no 4-bit, no Liger kernels, 2 map processes instead of 12, and the
Hub datasets are local files in the same layout (UltraFeedback-binarized: a `prompt` string beside conversations that
hold it; smoltalk2's preference splits with a `chat_template_kwargs` column; distilabel-capybara). Pushes go to the
local stand-in Hub. Plus what the handbook's format means: a weighted mixture is a seeded shuffle, not the first rows;
the pre-2025 `dataset_mixer` is refused with the block to write instead."""

import json
import random
import textwrap

import pytest
import yaml

import adadpo.hub.push
from adadpo.data import load_raw_datasets
from adadpo.files import write_jsonl_atomic
from adadpo.recipe import parse_args
from adadpo.testing import make_preference_rows
from tests.helpers.hub_standin import LocalHub
from tests.helpers.runs import step_logs, train


ENV_TOKEN = "hf_handbookTestToken0123456789"


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    hub = LocalHub(tmp_path / "hub")
    monkeypatch.setattr(adadpo.hub.push, "HfApi", hub.api_class)
    return hub


def ultrafeedback_rows(n: int, seed: int) -> list[dict]:
    """UltraFeedback-binarized's layout: `prompt` (str) and `chosen` / `rejected` [user, assistant] conversations."""
    rows = make_preference_rows(n, seed=seed, implicit_prompt=True)
    return [{"prompt": row["chosen"][0]["content"], **row, "score_chosen": 8.0, "score_rejected": 5.0} for row in rows]


def smoltalk_rows(n: int, seed: int, think: bool) -> list[dict]:
    """smoltalk2's preference splits: the same, plus `chat_template_kwargs` (SmolLM3's `enable_thinking`)."""
    return [{**row, "chat_template_kwargs": {"enable_thinking": think}} for row in ultrafeedback_rows(n, seed)]


def capybara_rows(n: int, seed: int) -> list[dict]:
    """distilabel-capybara-dpo's layout: multi-turn conversations; `prompt` is the first user turn."""
    rng, rows = random.Random(seed), []
    for row in ultrafeedback_rows(n, seed):
        first = row["chosen"][0]["content"]
        history = [{"role": "user", "content": first}, {"role": "assistant", "content": f"sure {rng.randint(0, 99)}"},
                   {"role": "user", "content": "and then?"}]  # fmt: skip
        rows.append({"source": "toy", "prompt": first, "chosen": history + row["chosen"][1:],
                     "rejected": history + row["rejected"][1:]})  # fmt: skip
    return rows


# SmolLM3-style: the template renders a system line that depends on `enable_thinking`.
THINKING_TEMPLATE = (
    "{{ '<|im_start|>system\n' + ('/think' if enable_thinking is defined and enable_thinking else '/no_think') "
    "+ '<|im_end|>\n' }}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

ZEPHYR_DPO = """
# Model arguments
model_name_or_path: {model}
torch_dtype: null

# Data training arguments
dataset_mixture:
  datasets:
    - id: {data_a}
      config: default
      split: train
      columns:
        - chosen
        - rejected
      weight: 1.0
    - id: {data_b}
      config: default
      split: train
      columns:
        - chosen
        - rejected
      weight: 0.5
  test_split_size: 8
  seed: 0
dataset_num_proc: 2

# DPOTrainer arguments
bf16: false
use_cpu: true
beta: 0.01
do_eval: true
eval_strategy: steps
eval_steps: 100
gradient_accumulation_steps: 2
gradient_checkpointing: true
gradient_checkpointing_kwargs:
  use_reentrant: False
hub_model_id: zephyr-7b-dpo-full
learning_rate: 5.0e-7
log_level: info
logging_steps: 10
lr_scheduler_type: cosine
max_length: 1024
max_prompt_length: 512
num_train_epochs: 1
optim: adamw_torch
output_dir: {out}
per_device_train_batch_size: 8
per_device_eval_batch_size: 8
push_to_hub: true
save_strategy: "steps"
save_steps: 100
save_total_limit: 1
seed: 42
warmup_ratio: 0.1
"""

SMOLLM3_APO = """
# Config for 2 node, with GBS 32
# Model arguments
model_name_or_path: {model}
model_revision: it-SFT
torch_dtype: float32
attn_implementation: sdpa
trust_remote_code: true
chat_template: {template}

# Data training arguments
dataset_mixture:
  datasets:
    - id: {data_a}
      config: Preference
      split: train
      columns:
        - chosen
        - rejected
        - prompt
        - chat_template_kwargs
      weight: 0.5
    - id: {data_b}
      config: Preference
      split: train
      columns:
        - chosen
        - rejected
        - prompt
        - chat_template_kwargs
      weight: 0.25
dataset_num_proc: 2
# DPO trainer config
bf16: false
use_cpu: true
do_eval: false
eval_strategy: 'no'
gradient_accumulation_steps: 2
gradient_checkpointing: true
gradient_checkpointing_kwargs:
  use_reentrant: true
output_dir: {out}
run_name: SmolLM3-DPO

hub_strategy: every_save
learning_rate: 1.0e-06
log_level: info
logging_steps: 1
logging_strategy: steps
lr_scheduler_type: cosine_with_min_lr
lr_scheduler_kwargs:
  min_lr_rate: 0.1
max_grad_norm: 0.2
beta: 0.05
loss_type: apo_zero
max_length: 24576
num_train_epochs: 1
overwrite_output_dir: true
per_device_train_batch_size: 1
push_to_hub: true
padding_free: true
report_to:
- tensorboard
save_strategy: steps
save_steps: 0.5
save_total_limit: 1
seed: 42
use_liger_kernel: false
warmup_ratio: 0.1
"""

ZEPHYR_ORPO = """
# Model arguments
model_name_or_path: {model}
model_revision: main
torch_dtype: float32
attn_implementation: sdpa

# Data training arguments
chat_template: {template}
dataset_name: {data_a}
dataset_train_split: train
dataset_num_proc: 2

# ORPOTrainer arguments
bf16: false
use_cpu: true
beta: 0.05
gradient_accumulation_steps: 1
gradient_checkpointing: true
gradient_checkpointing_kwargs:
  use_reentrant: true
hub_model_id: zephyr-orpo-141b-A35b
learning_rate: 5.0e-6
log_level: info
logging_steps: 10
lr_scheduler_type: inverse_sqrt
max_length: 2048
max_prompt_length: 1792
num_train_epochs: 3
optim: adamw_torch
output_dir: {out}
per_device_train_batch_size: 1
push_to_hub: true
report_to:
- tensorboard
save_strategy: "no"
seed: 42
warmup_steps: 100
"""


def write_recipe(tmp_path, text: str, method: str = "dpo", **values) -> str:
    """The recipe where alignment-handbook keeps it: recipes/<model>/<method>/config_full.yaml."""
    path = tmp_path / "recipes" / "tiny-model" / method / "config_full.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).format(**{k: json.dumps(str(v)) for k, v in values.items()}))
    return str(path)


def run_recipe(run_adadpo, recipe: str):
    with pytest.warns(UserWarning, match="is read as"):  # torch_dtype, warmup_ratio: renamed upstream
        return train(run_adadpo, ["--config", recipe, "--max_steps=1"])


def test_zephyr_dpo_with_a_two_dataset_mixture(run_adadpo, tiny_model_dir, tmp_path, local_hub):
    data_a = write_jsonl_atomic(tmp_path / "uf_a.jsonl", ultrafeedback_rows(40, seed=1))
    data_b = write_jsonl_atomic(tmp_path / "uf_b.jsonl", ultrafeedback_rows(40, seed=2))
    out = tmp_path / "zephyr"
    recipe = write_recipe(tmp_path, ZEPHYR_DPO, model=tiny_model_dir, data_a=data_a, data_b=data_b, out=out)
    with pytest.warns(UserWarning, match="taken for alignment-handbook's DPO recipe: loss_type: sigmoid"):
        trainer = run_recipe(run_adadpo, recipe)
    assert trainer.args.loss_names == ["sigmoid"] and trainer.loss_fn.name == "dpo"  # TRL's default loss
    assert len(trainer.train_dataset) + len(trainer.eval_dataset) == 40 + 20  # weight 0.5: half of b
    assert trainer.args.warmup_steps == 0.1 and trainer.args.max_prompt_length == 512
    assert json.loads((out / "all_results.json").read_text())["eval_loss"] > 0
    assert any("zephyr-7b-dpo-full" in c["repo_id"] for c in local_hub.commits)


def test_smollm3_apo_zero_with_prompt_and_chat_template_kwargs(run_adadpo, tiny_model_dir, tmp_path, local_hub):
    data_a = write_jsonl_atomic(tmp_path / "think.jsonl", smoltalk_rows(16, seed=3, think=True))
    data_b = write_jsonl_atomic(tmp_path / "no_think.jsonl", smoltalk_rows(16, seed=4, think=False))
    out = tmp_path / "smollm3"
    recipe = write_recipe(tmp_path, SMOLLM3_APO, model=tiny_model_dir, data_a=data_a, data_b=data_b, out=out,
                          template=THINKING_TEMPLATE)  # fmt: skip
    trainer = run_recipe(run_adadpo, recipe)
    assert trainer.loss_fn.name == "apo_zero" and trainer.padding_free
    assert len(trainer.train_dataset) == 8 + 4
    tokenizer = trainer.processing_class
    rendered = [tokenizer.decode(ids) for ids in trainer.train_dataset["prompt_ids"]]
    # each row's own `enable_thinking` reached the chat template
    assert sum("/think" in text for text in rendered) == 8 and sum("/no_think" in text for text in rendered) == 4
    assert all(text.rstrip().endswith("assistant") for text in rendered)  # the prompt is the conversation's start
    assert step_logs(trainer) and (out / "runs").exists()  # tensorboard


def test_zephyr_orpo_on_capybara_multi_turn_rows(run_adadpo, tiny_model_dir, tmp_path, local_hub):
    data = write_jsonl_atomic(tmp_path / "capybara.jsonl", capybara_rows(12, seed=5))
    out = tmp_path / "orpo"
    recipe = write_recipe(tmp_path, ZEPHYR_ORPO, method="orpo", model=tiny_model_dir, data_a=data, out=out,
                          template=THINKING_TEMPLATE)  # fmt: skip
    with pytest.warns(UserWarning, match="ORPO recipe: loss_type: orpo, orpo_lambda: 0.05, beta: 1.0"):
        trainer = run_recipe(run_adadpo, recipe)
    assert trainer.loss_fn.name == "orpo" and trainer.ref_model is None
    assert trainer.args.orpo_lambda == 0.05 and trainer.args.beta == 1.0  # ORPOConfig's beta is ORPO's lambda
    first = trainer.train_dataset[0]
    assert trainer.processing_class.decode(first["prompt_ids"]).count("<|im_start|>user") == 2  # both user turns
    assert trainer.state.global_step == 1 and trainer.state.log_history[-1]["train_loss"] > 0


def test_a_recipe_outside_the_handbook_folders_must_name_its_loss(tiny_model_dir, tmp_path):
    """DPO and ORPO recipes look alike: an unnamed loss is read from the handbook's folder or refused, never guessed."""
    orpo_elsewhere = tmp_path / "my-orpo.yaml"
    orpo_elsewhere.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_model_dir), "dataset_name": "d",
                                              "beta": 0.05, "output_dir": str(tmp_path / "o")}))  # fmt: skip
    for argv in (["--config", str(orpo_elsewhere)], ["--model_name_or_path=m", "--dataset_name=d"]):
        with pytest.raises(ValueError, match="`loss_type` is not set .*`loss_type: orpo` with its `beta` as"):
            parse_args(argv)
    assert not (tmp_path / "o").exists()


def test_a_weighted_mixture_is_a_seeded_shuffle_not_the_first_rows(tmp_path):
    """alignment-handbook subsamples a weighted dataset after shuffling it with the mixture's seed: on sorted data the
    first rows would be a biased sample."""
    rows = [{**row, "rank": i} for i, row in enumerate(ultrafeedback_rows(100, seed=6))]
    path = write_jsonl_atomic(tmp_path / "sorted.jsonl", rows)

    def ranks(seed):
        mixture = {"datasets": [{"id": str(path), "weight": 0.2}], "seed": seed}
        args = parse_args([f"--dataset_mixture={json.dumps(mixture)}", "--model_name_or_path=m", "--loss_type=sigmoid",
                           f"--output_dir={tmp_path}", "--use_cpu=true", "--bf16=false"])[0]  # fmt: skip
        return sorted(load_raw_datasets(args)["train"]["rank"])

    picked = ranks(0)
    assert len(picked) == 20 and picked != list(range(20)) and max(picked) > 50
    assert ranks(0) == picked and ranks(1) != picked  # the mixture's seed draws them


def test_the_pre_2025_dataset_mixer_is_refused_with_the_block_to_write(tmp_path):
    recipe = tmp_path / "old.yaml"
    recipe.write_text(yaml.safe_dump({
        "model_name_or_path": "m",
        "dataset_mixer": {"HuggingFaceH4/ultrafeedback_binarized": 1.0},
        "dataset_splits": ["train_prefs", "test_prefs"],
    }))  # fmt: skip
    with pytest.raises(ValueError, match="dataset_mixture") as error:
        parse_args(["--config", str(recipe), f"--output_dir={tmp_path}"])
    block = yaml.safe_load(str(error.value).split("Write instead:")[1].split("A mixture has")[0])
    assert block["dataset_mixture"]["datasets"] == [
        {"id": "HuggingFaceH4/ultrafeedback_binarized", "split": "train_prefs", "weight": 1.0}
    ]
    assert "test_prefs" in str(error.value)


def test_a_prompt_string_that_disagrees_with_the_conversations_is_refused(run_adadpo, tiny_model_dir, tmp_path):
    rows = ultrafeedback_rows(8, seed=7)
    rows[3]["prompt"] = "something else entirely"
    data = write_jsonl_atomic(tmp_path / "bad.jsonl", rows)
    argv = ["--model_name_or_path", str(tiny_model_dir), f"--dataset_name={data}", f"--output_dir={tmp_path / 'o'}",
            "--use_cpu=true", "--bf16=false", "--max_steps=1", "--report_to=none", "--loss_type=sigmoid"]  # fmt: skip
    with pytest.raises(ValueError, match="row 3: the `prompt` string is not a user turn"):
        train(run_adadpo, argv)
    assert not (tmp_path / "o").exists()
