#!/usr/bin/env python
r"""Train a causal LM on preference pairs with any loss of `adadpo.losses` (AdaDPO, DPO, SimPO, alpha-DPO, ...).

    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml scripts/run_adadpo.py \
        --config recipes/llama-3-8b-instruct/adadpo/config_full.yaml [--key=value ...]

The code is `adadpo.cli.run_adadpo`.
"""

import sys

from adadpo.cli.run_adadpo import cli


if __name__ == "__main__":
    sys.exit(cli())
