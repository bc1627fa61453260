#!/usr/bin/env python
"""Paper-style PNGs from training runs: training dynamics (Figure 2), the gradient-balance ratio over steps, and,
with --sweep_dir, final metrics against log10(beta) with the AdaDPO - DPO difference (Figure 3).

Usage and options: `python scripts/plot_runs.py --help`. The code is `adadpo.cli.plot_runs`.
"""

import sys

from adadpo.cli.plot_runs import cli


if __name__ == "__main__":
    sys.exit(cli())
