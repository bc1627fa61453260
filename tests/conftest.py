import os
from pathlib import Path

import pytest

from adadpo.files import write_jsonl_atomic
from adadpo.testing import save_tiny_model
from tests.helpers.runs import preference_rows_with_margin


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def pref_jsonl(tmp_path_factory) -> Path:
    return write_jsonl_atomic(tmp_path_factory.mktemp("data") / "prefs.jsonl", preference_rows_with_margin(32))


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


@pytest.fixture(scope="session")
def run_adadpo():
    """The training entry point, `scripts/run_adadpo.py`'s `adadpo.cli.run_adadpo`."""
    from adadpo.cli import run_adadpo

    return run_adadpo


@pytest.fixture
def emulated_flash(monkeypatch):
    """transformers' flash-attention path on CPU, through a pure-torch reference kernel (tests/helpers/flash_reference.py)."""
    from tests.helpers.flash_reference import emulate_flash

    emulate_flash(monkeypatch)


@pytest.fixture
def leaky_attention(monkeypatch):
    """`sdpa` replaced by an attention function that ignores packed boundaries (test-only)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from tests.helpers.flash_reference import leaky_sdpa

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "sdpa", leaky_sdpa)
