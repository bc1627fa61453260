#!/usr/bin/env python
r"""On-policy preference pairs: sample `num_samples` responses per prompt from a model, score each with a scorer
(IFEval's checkers via lm-eval, or a reward model), keep the best as `chosen` and the worst as `rejected`, and write a TRL
conversational preference dataset (.jsonl or .parquet, optionally pushed to the Hub).

    python scripts/generate_preferences.py --config recipes/smollm2-135m-instruct/generate/config_cpu.yaml
    python scripts/generate_preferences.py --model_name_or_path my/sft-model --scorer reward_model \
        --reward_model_name_or_path RLHFlow/ArmoRM-Llama3-8B-v0.1 --trust_remote_code --output_path data/prefs.jsonl

Prompts whose best and worst samples score the same are dropped (counted in the log): see `adadpo.evaluation.scoring.select_pair`.

The code is `adadpo.cli.generate_preferences`.
"""

import sys

from adadpo.cli.generate_preferences import cli


if __name__ == "__main__":
    sys.exit(cli())
