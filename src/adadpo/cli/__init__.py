"""The entry points: `scripts/<name>.py` runs `adadpo.cli.<name>.cli()`. Tests and benchmarks call the same `main`s."""

import contextlib
from pathlib import Path


# The repository's scripts/ folder (the project runs from its checkout: `pip install -e .`).
SCRIPTS_DIR = Path(__file__).resolve().parents[3] / "scripts"


REFUSAL_ERRORS = (ValueError, FileNotFoundError)  # every check before training raises one, naming the key and fix


@contextlib.contextmanager
def refusals_before_training():
    """Inside, a ValueError / FileNotFoundError is the input refused (the recipe, its data or its launch cannot run):
    it is marked so that the entry point prints its message alone. Errors once training runs keep their traceback."""
    try:
        yield
    except REFUSAL_ERRORS as error:
        error.refused_before_training = True
        raise


def is_refusal(error: BaseException) -> bool:
    return getattr(error, "refused_before_training", False)
