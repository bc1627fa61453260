#!/usr/bin/env python
"""Train a causal LM on preference pairs with any loss of `adadpo.losses` (AdaDPO, DPO, SimPO, alpha-DPO, ...).

Usage and options: `python scripts/run_adadpo.py --help`. The code is `adadpo.cli.run_adadpo`.
"""

import sys

from adadpo.cli.run_adadpo import cli


if __name__ == "__main__":
    sys.exit(cli())
