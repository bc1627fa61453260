#!/usr/bin/env python
"""Evaluate one or several models side by side on a prompt set.

Usage and options: `python scripts/evaluate.py --help`. The code is `adadpo.cli.evaluate`.
"""

import sys

from adadpo.cli.evaluate import cli


if __name__ == "__main__":
    sys.exit(cli())
