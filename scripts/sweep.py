#!/usr/bin/env python
r"""Run a hyperparameter grid over a recipe, one cell after another, sharing one reference log-prob pass.

    python scripts/sweep.py --recipe recipes/.../config_full.yaml --sweep_dir outputs/sweep \
        --grid learning_rate=3.0e-7,5.0e-7 beta=0.01,0.05 loss_type=dpo,adadpo \
        --accelerate_config accelerate_configs/deepspeed_zero3.yaml

Re-running the same command skips finished cells and re-runs failed ones. See docs/sweeps.md.

The code is `adadpo.cli.sweep`.
"""

import sys

from adadpo.cli.sweep import cli


if __name__ == "__main__":
    sys.exit(cli())
