#!/usr/bin/env python
r"""Evaluate one or several models side by side on a prompt set.

    python scripts/evaluate.py --model_name_or_paths base/ dpo/ adadpo/ --model_names base dpo adadpo \
        --prompts ifeval:all --ifeval_data ../shared/data/ifeval_input_data.jsonl --output_dir outputs/eval

On IFEval prompts (`ifeval:all` = the 541 of google/IFEval, or one half of the fixed split, or any rows in IFEval's
format) it reports IFEval's four numbers, prompt-level and instruction-level accuracy, strict and loose, from
lm-eval's checkers (`adadpo.evaluation.ifeval`; prompts whose checkers cannot run here are counted and left out, with
the reason), and each model's wins / losses / ties against the base model (the first model unless `base_model` says
otherwise) under the per-prompt share of instructions followed, with a sign test; for any prompt set it reports the
mean response length in tokens. It prints a markdown table and writes, under `output_dir`:
    results.json, results.md                        the numbers
    answers.jsonl                                   every prompt with each model's response (and IFEval score)
    alpaca_eval/<name>/model_outputs.json           AlpacaEval 2 model outputs
    arena-hard/model_answer/<name>.jsonl            Arena-Hard answers
Greedy decoding by default (temperature 0), so results are deterministic.

The code is `adadpo.cli.evaluate`.
"""

import sys

from adadpo.cli.evaluate import cli


if __name__ == "__main__":
    sys.exit(cli())
