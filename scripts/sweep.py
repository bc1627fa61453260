#!/usr/bin/env python
"""Run a hyperparameter grid over a recipe, one cell after another, sharing one reference log-prob pass.

Usage and options: `python scripts/sweep.py --help`. The code is `adadpo.cli.sweep`.
"""

import sys

from adadpo.cli.sweep import cli


if __name__ == "__main__":
    sys.exit(cli())
