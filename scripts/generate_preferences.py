#!/usr/bin/env python
"""On-policy preference pairs: sample `num_samples` responses per prompt from a model, score each with a scorer
(IFEval's checkers via lm-eval, or a reward model), keep the best as `chosen` and the worst as `rejected`, and write a TRL
conversational preference dataset (.jsonl or .parquet, optionally pushed to the Hub).

Usage and options: `python scripts/generate_preferences.py --help`. The code is `adadpo.cli.generate_preferences`.
"""

import sys

from adadpo.cli.generate_preferences import cli


if __name__ == "__main__":
    sys.exit(cli())
