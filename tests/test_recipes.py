"""Every recipe parses, through the same parser `run_adadpo.py` uses, into the three config classes, with the YAML's
own values and types intact; the recipe tree has the promised layout. No model, data or network is touched."""

import dataclasses
import re
import types
import typing
from pathlib import Path

import pytest
import yaml
from trl import ModelConfig

from adadpo.config import AdaDPOConfig, ScriptArguments
from adadpo.losses import LOSS_HPARAM_DEFAULTS, LOSS_SPECS
from adadpo.recipe import parse_args
from adadpo.training.launch_checks import apply_launch, derive_gradient_accumulation


REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = REPO_ROOT / "recipes"
# `generate/` folders hold data-generation configs, another dataclass (see scripts/generate_preferences.py).
RECIPES = sorted(p for p in RECIPES_DIR.rglob("*.yaml") if "generate" not in p.relative_to(RECIPES_DIR).parts)
CONFIG_CLASSES = (ScriptArguments, AdaDPOConfig, ModelConfig)
CPU_DEMO_MODEL = "smollm2-135m-instruct"
PAPER_MODELS = {
    "llama-3-8b-instruct": {"adadpo", "dpo", "simpo", "alpha-dpo", "ipo", "rdpo", "cpo", "orpo"},
    "llama-3-8b-instruct-v0.2": {"adadpo", "dpo", "simpo", "alpha-dpo"},
    "mistral-7b-instruct-v0.2": {"adadpo", "dpo", "simpo", "alpha-dpo"},
    "gemma-2-9b-it": {"adadpo", "dpo", "simpo", "alpha-dpo"},
}
# The attention kernels that accept packed (padding-free) rows.
PACKING_ATTENTION = {"flash_attention_2", "flash_attention_3"}
# Keys the test overrides so that parsing writes nothing to the repo and `bf16` is accepted without a GPU.
OVERRIDDEN = {"output_dir", "use_cpu"}


def recipe_id(path: Path) -> str:
    return str(path.relative_to(RECIPES_DIR))


def load_yaml(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def parse_recipe(path: Path, tmp_path: Path):
    """The run script's own parsing path (unknown-key check + TrlParser), on CPU, writing nothing."""
    return parse_args(["--config", str(path), "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"])


def field_owner(name: str, parsed) -> object:
    for obj in parsed:
        if name in {f.name for f in dataclasses.fields(obj)}:
            return obj
    raise AssertionError(f"{name} is not a field of {[type(o).__name__ for o in parsed]}")


def plain(value):
    """Enums (lr_scheduler_type, eval_strategy, optim, ...) compare by their YAML spelling."""
    return getattr(value, "value", value)


def float_fields() -> set[str]:
    """Fields annotated float (or float | None) and not int: YAML must give them a number, never text."""
    names = set()
    for cls in CONFIG_CLASSES:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            hint = hints.get(field.name)
            args = set(typing.get_args(hint)) if typing.get_origin(hint) in (typing.Union, types.UnionType) else {hint}
            if float in args and int not in args:
                names.add(field.name)
    return names


# Real-valued settings the papers state (learning rate and every float loss hyperparameter): written as floats,
# so a reader (and a sweep that copies them) sees `5.0e-7`, `10.0`, not `5e-7` or `10`.
STRICT_FLOATS = {"learning_rate"} | {k for k, v in LOSS_HPARAM_DEFAULTS.items() if isinstance(v, float)}


def is_number_text(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def walk(value, where: str):
    """Yield (location, leaf) for every scalar in a nested YAML value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk(item, f"{where}[{i}]")
    else:
        yield where, value


def test_recipes_are_found():
    ids = {recipe_id(p) for p in RECIPES}
    assert all(not i.startswith(f"{CPU_DEMO_MODEL}/generate/") for i in ids)
    for model, losses in PAPER_MODELS.items():
        for loss in losses:
            assert f"{model}/{loss}/config_full.yaml" in ids


@pytest.mark.parametrize("path", RECIPES, ids=recipe_id)
def test_recipe_parses_with_its_own_values(path, tmp_path):
    raw = load_yaml(path)
    parsed = parse_recipe(path, tmp_path)
    for key, value in raw.items():
        if key in OVERRIDDEN:
            continue
        got = getattr(field_owner(key, parsed), key)
        if key == "report_to" and value == "none":
            assert got in ([], ["none"], "none"), got
        elif isinstance(value, float):
            assert isinstance(got, float) and got == value, (key, value, got)
        else:
            assert plain(got) == value, (key, value, got)
    script_args, training_args, model_args = parsed
    assert training_args.output_dir == str(tmp_path / "out")
    assert model_args.model_name_or_path


@pytest.mark.parametrize("path", RECIPES, ids=recipe_id)
def test_recipe_floats_are_floats(path):
    """`5e-7` (no dot) is a *string* in YAML 1.1: every numeric-looking value must load as a number."""
    text = path.read_text()
    bare_exponent = re.compile(r"^\s*[\w.-]+:\s*[-+]?\d+[eE][-+]?\d+\s*(#.*)?$")
    offenders = [line for line in text.splitlines() if bare_exponent.match(line)]
    assert not offenders, f"{path}: write floats with a dot, e.g. 5.0e-7: {offenders}"
    numeric_strings = [(where, v) for where, v in walk(load_yaml(path), path.name) if is_number_text(v)]
    assert not numeric_strings, f"YAML read these numbers as text: {numeric_strings}"
    floats = float_fields()
    for key, value in load_yaml(path).items():
        if key in floats and value is not None:
            assert isinstance(value, int | float) and not isinstance(value, bool), f"{path}: `{key}: {value!r}`"
        if key in STRICT_FLOATS and value is not None:
            assert isinstance(value, float), f"{path}: write `{key}` as a float, e.g. `{float(value)!r}`"


@pytest.mark.parametrize("path", RECIPES, ids=recipe_id)
def test_recipe_loss_is_registered_and_matches_its_folder(path, tmp_path):
    _, training_args, _ = parse_recipe(path, tmp_path)
    assert training_args.loss_type in LOSS_SPECS
    folder = path.parent.name
    assert training_args.loss_type == folder.replace("-", "_"), f"{recipe_id(path)} runs {training_args.loss_type}"


@pytest.mark.parametrize("path", RECIPES, ids=recipe_id)
def test_recipe_global_batch_divides(path, tmp_path):
    """GPU recipes keep their global batch on 1..8 GPUs; the CPU demo on 1 and 2 processes (cpu_2proc.yaml)."""
    raw = load_yaml(path)
    per_device = raw["per_device_train_batch_size"]
    global_batch = raw["global_batch_size"]
    world_sizes = (1, 2) if path.name == "config_cpu.yaml" else (1, 2, 4, 8)
    for world_size in world_sizes:
        steps = derive_gradient_accumulation(global_batch, world_size, per_device)
        assert steps * world_size * per_device == global_batch
    _, training_args, _ = parse_recipe(path, tmp_path)  # parsed and launched in a single process
    apply_launch(training_args, environ={})
    assert training_args.gradient_accumulation_steps * per_device == global_batch


@pytest.mark.parametrize("path", RECIPES, ids=recipe_id)
def test_recipe_packing_needs_flash_attention(path):
    raw = load_yaml(path)
    if raw.get("padding_free"):
        assert raw.get("attn_implementation") in PACKING_ATTENTION, f"{path}: padding_free needs flash attention"
    if "gemma-2" in raw["model_name_or_path"]:
        assert raw.get("attn_implementation") != "sdpa", "sdpa ignores Gemma-2's attention soft-cap"


def test_full_recipes_share_the_papers_training_setup():
    full = [p for p in RECIPES if p.name == "config_full.yaml"]
    setups = {
        recipe_id(p): {
            k: load_yaml(p).get(k)
            for k in (
                "global_batch_size",
                "max_length",
                "lr_scheduler_type",
                "warmup_steps",
                "num_train_epochs",
                "bf16",
            )
        }
        for p in full
    }
    expected = {
        "global_batch_size": 128,
        "max_length": 2048,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.1,
        "num_train_epochs": 1,
        "bf16": True,
    }
    assert {name: setup for name, setup in setups.items() if setup != expected} == {}


def test_one_qlora_recipe_is_single_gpu_4bit_peft(tmp_path):
    qlora = [p for p in RECIPES if p.name == "config_qlora.yaml"]
    assert qlora
    for path in qlora:
        _, training_args, model_args = parse_recipe(path, tmp_path)
        apply_launch(training_args, environ={})
        assert model_args.use_peft and model_args.load_in_4bit
        assert training_args.gradient_accumulation_steps * training_args.per_device_train_batch_size == (
            training_args.global_batch_size
        )


def test_cpu_recipes_run_on_cpu_in_fp32(tmp_path):
    cpu = [p for p in RECIPES if p.name == "config_cpu.yaml"]
    assert {p.parent.name for p in cpu} >= {"adadpo", "dpo"}
    for path in cpu:
        raw = load_yaml(path)
        # use_cpu in the recipe itself: without it the two processes of cpu_2proc.yaml never form one group.
        assert raw["use_cpu"] is True and raw["bf16"] is False and raw["padding_free"] is False
        assert raw["report_to"] == "none"
        assert raw["output_dir"].startswith("outputs/")


def test_makefile_demo_uses_an_existing_recipe_and_reports_its_output_dir():
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = re.search(r"--config (recipes/\S+\.yaml)", makefile)
    report = re.search(r"--report (\S+)", makefile)
    assert recipe and report
    assert (REPO_ROOT / recipe.group(1)).is_file()
    assert load_yaml(REPO_ROOT / recipe.group(1))["output_dir"] == report.group(1)


def test_every_model_folder_has_a_readme_and_its_configs():
    assert (RECIPES_DIR / "README.md").is_file()
    model_dirs = sorted(d for d in RECIPES_DIR.iterdir() if d.is_dir())
    assert {d.name for d in model_dirs} >= set(PAPER_MODELS) | {CPU_DEMO_MODEL}
    for model_dir in model_dirs:
        assert (model_dir / "README.md").is_file(), f"{model_dir} has no README.md"
        for loss_dir in (d for d in model_dir.iterdir() if d.is_dir() and d.name != "generate"):
            wanted = "config_cpu.yaml" if model_dir.name == CPU_DEMO_MODEL else "config_full.yaml"
            assert (loss_dir / wanted).is_file(), f"{loss_dir} has no {wanted}"


@pytest.mark.parametrize("readme", sorted(RECIPES_DIR.rglob("README.md")), ids=lambda p: recipe_id(p))
def test_readme_commands_name_files_that_exist(readme):
    text = readme.read_text()
    paths = set(re.findall(r"(?:recipes|accelerate_configs|scripts)/[\w./-]+\.(?:yaml|py|slurm)", text))
    assert paths, f"{readme} shows no launch command"
    missing = sorted(p for p in paths if "<" not in p and not (REPO_ROOT / p).is_file())
    assert not missing, f"{readme} names files that do not exist: {missing}"


# `key: value  # = beta x ... (B x A)`: a value converted from an official config that states beta/gamma or alpha.
CONVERTED = re.compile(
    r"^(simpo_gamma|alpha_dpo_alpha):\s*([0-9.eE+-]+)\s*#\s*= beta x [^(]*\(([0-9.]+) x ([0-9.]+)\)"
)


@pytest.mark.parametrize("path", [p for p in RECIPES if p.parent.name in ("simpo", "alpha-dpo")], ids=recipe_id)
def test_converted_hyperparameters_equal_beta_times_the_official_value(path):
    """SimPO/alpha-DPO's official configs give gamma/beta and alpha per unit of beta; our eq. 12 form takes the
    products. Each converted value states its product in a comment, whose beta must be the recipe's and whose
    product must be the value (an unconverted alpha, as the alpha-DPO recipes once had, fails here)."""
    raw = load_yaml(path)
    lines = [CONVERTED.match(line) for line in path.read_text().splitlines()]
    converted = {m.group(1): (float(m.group(2)), float(m.group(3)), float(m.group(4))) for m in lines if m}
    expected_keys = {"simpo_gamma", "alpha_dpo_alpha"} if path.parent.name == "alpha-dpo" else {"simpo_gamma"}
    assert set(converted) == expected_keys, f"{path}: state each conversion as `# = beta x ... (B x A)`"
    for key, (value, beta, official) in converted.items():
        assert beta == raw["beta"], (key, beta, raw["beta"])
        assert value == pytest.approx(beta * official), (key, value, beta, official)
