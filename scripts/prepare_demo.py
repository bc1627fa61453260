#!/usr/bin/env python
"""`make demo` helper: prepare SmolLM2-135M-Instruct and a small preference set under .cache/ (once), or, with
`--report RUN_DIR`, print where a finished run's model and model card are and its final metrics.

Usage and options: `python scripts/prepare_demo.py --help`. The code is `adadpo.cli.prepare_demo`.
"""

import sys

from adadpo.cli.prepare_demo import cli


if __name__ == "__main__":
    sys.exit(cli())
