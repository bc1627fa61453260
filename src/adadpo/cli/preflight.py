r"""Check a recipe on the machine it will train on, in minutes, before a long run (docs/preflight.md).

    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml scripts/preflight.py \
        --config recipes/llama-3-8b-instruct/adadpo/config_full.yaml [--key=value ...] [--report preflight.json]

Launched and configured exactly like scripts/run_adadpo.py (same recipe, same overrides, same setup code). Prints
one table of PASS / WARN / FAIL checks; exits 1 on any FAIL. Trains nothing that is kept, writes no checkpoint and
nothing under `output_dir`. Own options: `--report PATH` (the table as JSON), `--sample_rows N` (rows for the
template check, default 256), `--batches N` (micro-batches for the identity / packing checks, default 2).
"""

import logging
import sys

from accelerate import PartialState

from adadpo.cli import REFUSAL_ERRORS, is_refusal, refusals_before_training
from adadpo.preflight.report import write_json
from adadpo.preflight.runner import run_preflight
from adadpo.recipe import parse_args, recipe_help


OPTIONS = {"--report": None, "--sample_rows": 256, "--batches": 2}


def split_options(argv: list[str]) -> tuple[dict, list[str]]:
    """Preflight's own options out of argv; the rest is the recipe and its overrides, as run_adadpo reads them."""
    options, rest, i = dict(OPTIONS), [], 0
    while i < len(argv):
        key, _, value = argv[i].partition("=")
        if key in OPTIONS:
            if not value:
                i += 1
                value = argv[i]
            options[key] = value if key == "--report" else int(value)
        else:
            rest.append(argv[i])
        i += 1
    return {k.lstrip("-"): v for k, v in options.items()}, rest


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip(), "", recipe_help("scripts/preflight.py"), sep="\n")
        return 0
    options, recipe_argv = split_options(argv)
    with refusals_before_training():
        script_args, training_args, model_args = parse_args(recipe_argv)
    logging.basicConfig(format="%(levelname)s - %(name)s - %(message)s", level=logging.WARNING)
    report, details = run_preflight(
        script_args, training_args, model_args, recipe_argv, options["sample_rows"], options["batches"]
    )
    if PartialState().is_main_process:
        print(report.table(), flush=True)
        if options["report"]:
            write_json(options["report"], report, {"details": {k: v for k, v in details.items() if k != "losses"}})
    return report.exit_code()


def cli() -> int:
    try:
        return main()
    except REFUSAL_ERRORS as error:
        if not is_refusal(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
