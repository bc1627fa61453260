"""The layout of a run folder (`output_dir`) and of a sweep folder: every file and folder name, in one place.

    <output_dir>/                          RunFolder
        checkpoint-<N>/                    transformers' checkpoint + COUNTERS_FILE (+ NORMALIZER_FILE for alpha-DPO)
        previous-runs/<time>/checkpoint-<N>/  an earlier run's checkpoints, set aside by `overwrite_output_dir`
        .checkpoint-staging/<name>/        a checkpoint (or a Hub download) being written; renamed whole when complete
        .hub-push/checkpoint-<N>/          hard-linked snapshots of checkpoints being pushed to the Hub
        README.md                          the model card
        adadpo_config.yaml                 the resolved recipe (every field that differs from its default)
        trainer_state.json                 transformers' log history (read by the plots)
        all_results.json                   final metrics, written last: its presence means the run finished

    <sweep_dir>/                           SweepFolder
        sweep.json, sweep_state.json       the grid and cells; each cell's last status
        recipes/<cell>.yaml                each cell's resolved recipe
        <cell>/                            each cell's run folder
        ref_cache/                         the reference log-probs every cell shares
        logs/<cell>.log, sweep.slurm       console logs; the Slurm array script
        results.csv, results.md            every cell's final metrics

Renaming a file is one edit here. Nothing in this module writes; it reads only to find what exists.
"""

import os
from pathlib import Path


ALL_RESULTS = "all_results.json"
RESOLVED_CONFIG = "adadpo_config.yaml"
MODEL_CARD = "README.md"
# transformers' names (`TRAINER_STATE_NAME`, `PREFIX_CHECKPOINT_DIR`), written out so this module imports nothing;
# tests/test_architecture.py checks they still agree.
TRAINER_STATE = "trainer_state.json"
CHECKPOINT_PREFIX = "checkpoint"
CHECKPOINT_STAGING = ".checkpoint-staging"  # transformers resumes only from `checkpoint-<N>` folders: never this
HUB_SNAPSHOTS = ".hub-push"
TENSORBOARD_RUNS = "runs"
# Inside a checkpoint, beside transformers' own files: what resume needs to continue exactly.
COUNTERS_FILE = "adadpo_counters.json"
NORMALIZER_FILE = "alpha_margin_normalizer.json"  # the loss's state (name kept so existing checkpoints resume)
SWEEP_REF_CACHE = "ref_cache"
PREVIOUS_RUNS = "previous-runs"


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}-{step}"


class RunFolder:
    """Paths inside one training run's `output_dir`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def all_results(self) -> Path:
        return self.root / ALL_RESULTS

    @property
    def resolved_config(self) -> Path:
        return self.root / RESOLVED_CONFIG

    @property
    def model_card(self) -> Path:
        return self.root / MODEL_CARD

    @property
    def trainer_state(self) -> Path:
        return self.root / TRAINER_STATE

    @property
    def staging(self) -> Path:
        return self.root / CHECKPOINT_STAGING

    @property
    def hub_snapshots(self) -> Path:
        return self.root / HUB_SNAPSHOTS

    def checkpoint(self, step: int) -> Path:
        return self.root / checkpoint_name(step)

    def checkpoints(self) -> list[Path]:
        return sorted(p for p in self.root.glob(f"{CHECKPOINT_PREFIX}-*") if p.is_dir())

    @property
    def previous_runs(self) -> Path:
        return self.root / PREVIOUS_RUNS

    def is_finished(self) -> bool:
        return self.all_results.is_file()


def not_pushed_at_the_end() -> list[str]:
    """What the final Hub push of a run folder leaves out (`upload_folder` ignore patterns): checkpoints, staging,
    push snapshots, temporary files, tensorboard logs and a sweep's shared cache."""
    return [
        f"{CHECKPOINT_PREFIX}-*",
        f"{CHECKPOINT_STAGING}/*",
        f"{HUB_SNAPSHOTS}/*",
        "*.tmp",
        f"{TENSORBOARD_RUNS}/*",
        f"{PREVIOUS_RUNS}/*",
        f"{SWEEP_REF_CACHE}/*",
    ]


class SweepFolder:
    """Paths inside a `scripts/sweep.py` folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / "sweep.json"

    @property
    def state(self) -> Path:
        return self.root / "sweep_state.json"

    @property
    def recipes(self) -> Path:
        return self.root / "recipes"

    def recipe(self, cell: str) -> Path:
        return self.recipes / f"{cell}.yaml"

    def run(self, cell: str) -> RunFolder:
        return RunFolder(self.root / cell)

    @property
    def ref_cache(self) -> Path:
        return self.root / SWEEP_REF_CACHE

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, cell: str) -> Path:
        return self.logs / f"{cell}.log"

    @property
    def slurm_script(self) -> Path:
        return self.root / "sweep.slurm"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def results_md(self) -> Path:
        return self.root / "results.md"
