#!/usr/bin/env python
r"""Check a recipe on the machine it will train on, in minutes, before a long run (docs/preflight.md).

    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml scripts/preflight.py \
        --config recipes/llama-3-8b-instruct/adadpo/config_full.yaml [--key=value ...] [--report preflight.json]

Launched and configured exactly like scripts/run_adadpo.py (same recipe, same overrides, same setup code). Prints
one table of PASS / WARN / FAIL checks; exits 1 on any FAIL. Trains nothing that is kept, writes no checkpoint and
nothing under `output_dir`. Own options: `--report PATH` (the table as JSON), `--sample_rows N` (rows for the
template check, default 256), `--batches N` (micro-batches for the identity / packing checks, default 2).

The code is `adadpo.cli.preflight`.
"""

import sys

from adadpo.cli.preflight import cli


if __name__ == "__main__":
    sys.exit(cli())
