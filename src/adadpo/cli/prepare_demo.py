"""`make demo` helper: prepare SmolLM2-135M-Instruct and a small preference set under .cache/ (once), or, with
`--report RUN_DIR`, print where a finished run's model and model card are and its final metrics."""

import argparse
import json
import sys
from pathlib import Path

from adadpo.demo import make_demo_preferences, prepare_smollm2
from adadpo.files import write_jsonl_atomic
from adadpo.run_folder import RunFolder


def report(run_dir: Path) -> int:
    run = RunFolder(run_dir)
    if not run.is_finished():
        print(f"No finished run in {run_dir} ({run.all_results.name} is missing).", file=sys.stderr)
        return 1
    metrics = json.loads(run.all_results.read_text())
    print(f"\nModel and tokenizer: {run_dir.resolve()}")
    print(f"Model card:          {run.model_card.resolve()}")
    for key in sorted(metrics):
        if isinstance(metrics[key], int | float):
            print(f"  {key:32s} {metrics[key]:.4g}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache_dir", default=".cache")
    parser.add_argument("--num_pairs", type=int, default=320)
    parser.add_argument("--report", type=Path, help="print the results of a finished run folder and exit")
    args = parser.parse_args(argv)
    if args.report is not None:
        return report(args.report)
    model_dir = prepare_smollm2(Path(args.cache_dir) / "smollm2-135m-instruct")
    data_path = Path(args.cache_dir) / "demo_prefs.jsonl"
    if not data_path.exists():
        write_jsonl_atomic(data_path, make_demo_preferences(args.num_pairs))
    print(f"Model: {model_dir}\nData:  {data_path}")
    return 0


def cli() -> int:
    return main()
