"""The entry points: `scripts/<name>.py` runs `adadpo.cli.<name>.cli()`. Tests and benchmarks call the same `main`s."""

from pathlib import Path


# The repository's scripts/ folder (the project runs from its checkout: `pip install -e .`).
SCRIPTS_DIR = Path(__file__).resolve().parents[3] / "scripts"
