import importlib.util
import os
import random
from pathlib import Path

import pytest

from adadpo.testing import make_preference_rows, save_tiny_model, write_jsonl


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def preference_rows_with_margin(n: int, seed: int = 0, **kwargs):
    rng = random.Random(seed)
    rows = make_preference_rows(n, seed=seed, **kwargs)
    for row in rows:
        row["reward_margin"] = rng.uniform(0.0, 2.0)  # MADPO reads it; other losses ignore it
    return rows


@pytest.fixture(scope="session")
def pref_jsonl(tmp_path_factory) -> Path:
    return write_jsonl(preference_rows_with_margin(32), tmp_path_factory.mktemp("data") / "prefs.jsonl")


@pytest.fixture
def model_loads(monkeypatch) -> list[str]:
    """Class names of every pretrained model load, however it is reached: `AutoModelForCausalLM.from_pretrained`
    (our policy), TRL's `create_model_from_path` (the reference, through the architecture class) or any other
    route; they all end in `PreTrainedModel.from_pretrained`."""
    from transformers import PreTrainedModel

    loads = []
    original = PreTrainedModel.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(cls.__name__)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(counting))
    return loads


def harness_env(**extra: str) -> dict[str, str]:
    """Environment of a subprocess that runs a test file as a per-process harness script: offline, quiet, one
    thread, and `tests/` importable (pytest puts it on sys.path; a script run from tests/<package>/ does not)."""
    paths = [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "OMP_NUM_THREADS": "1",
    }
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in paths if p), **extra}


def load_script(name: str):
    """Import scripts/<name>.py as a module, so tests call its real `main`."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def run_adadpo():
    return load_script("run_adadpo")


def tiny_run_args(model_dir, data_path, output_dir, **overrides) -> list[str]:
    """Command-line arguments of a 3-step CPU run on the tiny model."""
    args = {
        "model_name_or_path": str(model_dir),
        "dataset_name": str(data_path),
        "output_dir": str(output_dir),
        "max_steps": 3,
        "per_device_train_batch_size": 2,
        "learning_rate": 1.0e-3,
        "max_length": 64,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 3,
        "report_to": "none",
        "bf16": False,
        "gradient_checkpointing": False,
        "use_cpu": True,
        "seed": 0,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    args.update(overrides)
    return [f"--{key}={value}" for key, value in args.items() if value is not None]


@pytest.fixture
def emulated_flash(monkeypatch):
    """transformers' flash-attention path on CPU, through a pure-torch reference kernel (tests/flash_reference.py)."""
    from flash_reference import emulate_flash

    emulate_flash(monkeypatch)


@pytest.fixture
def leaky_attention(monkeypatch):
    """`sdpa` replaced by an attention function that ignores packed boundaries (test-only)."""
    from flash_reference import leaky_sdpa
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "sdpa", leaky_sdpa)
