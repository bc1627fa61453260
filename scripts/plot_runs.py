#!/usr/bin/env python
r"""Paper-style PNGs from training runs: training dynamics (Figure 2), the gradient-balance ratio over steps, and,
with --sweep_dir, final metrics against log10(beta) with the AdaDPO - DPO difference (Figure 3).

    python scripts/plot_runs.py --sweep_dir outputs/sweep --out outputs/sweep/plots
    python scripts/plot_runs.py outputs/run-a outputs/run-b --out plots
    python scripts/plot_runs.py --results scores.csv --metric alpaca_eval_lc --out plots  # your own columns

The code is `adadpo.cli.plot_runs`.
"""

import sys

from adadpo.cli.plot_runs import cli


if __name__ == "__main__":
    sys.exit(cli())
