#!/usr/bin/env python
"""Check a recipe on the machine it will train on, in minutes, before a long run (docs/preflight.md).

Usage and options: `python scripts/preflight.py --help`. The code is `adadpo.cli.preflight`.
"""

import sys

from adadpo.cli.preflight import cli


if __name__ == "__main__":
    sys.exit(cli())
