r"""Run a hyperparameter grid over a recipe, one cell after another, sharing one reference log-prob pass.

    python scripts/sweep.py --recipe recipes/.../config_full.yaml --sweep_dir outputs/sweep \
        --grid learning_rate=3.0e-7,5.0e-7 beta=0.01,0.05 loss_type=dpo,adadpo \
        --accelerate_config accelerate_configs/deepspeed_zero3.yaml

Re-running the same command skips finished cells and re-runs failed ones. See docs/sweeps.md.
"""

import argparse
import sys
from pathlib import Path

from adadpo.cli import SCRIPTS_DIR
from adadpo.files import write_text_atomic
from adadpo.sweep.parse import load_grid_file, parse_grid_tokens, parse_set_tokens
from adadpo.sweep.results import write_results
from adadpo.sweep.runs import (
    Runner,
    build_launch_command,
    default_accelerate,
    is_finished,
    load_plan,
    plan_sweep,
    run_cells,
    run_streaming,
    slurm_array_script,
    write_plan,
)


TRAIN_SCRIPT = SCRIPTS_DIR / "run_adadpo.py"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", help="Base recipe YAML; every cell starts from it.")
    parser.add_argument("--grid", nargs="+", default=[], metavar="KEY=V1,V2", help="Grid axes (YAML values).")
    parser.add_argument("--grid_file", help="YAML mapping `key: [v1, v2]`, instead of or besides --grid.")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides", help="For all cells.")
    parser.add_argument("--sweep_dir", required=True, help="Folder for cell recipes, runs, logs and results.")
    parser.add_argument("--accelerate_config", help="accelerate config file, the same for every cell.")
    parser.add_argument("--script", default=str(TRAIN_SCRIPT), help="Training script (default: run_adadpo.py).")
    parser.add_argument(
        "--no_shared_ref_cache",
        action="store_true",
        help="Do not set precompute_ref_log_probs/ref_logps_cache_dir (each cell runs its own reference pass).",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry_run", action="store_true", help="Validate and list the cells; write nothing.")
    mode.add_argument("--print", action="store_true", dest="print_only", help="Write the recipes, print commands.")
    mode.add_argument("--slurm", action="store_true", help="Write the recipes and a slurm array script; run nothing.")
    mode.add_argument("--collect", action="store_true", help="Only (re)collect results.csv / results.md.")
    parser.add_argument("--slurm_gpus", type=int, default=8, help="GPUs per array task (default 8).")
    parser.add_argument("--slurm_max_parallel", type=int, help="At most this many array tasks at once.")
    args = parser.parse_args(argv)
    if not args.collect and not args.recipe:
        parser.error("--recipe is required (only --collect works from the sweep folder alone).")
    return args


def main(argv: list[str] | None = None, runner: Runner = run_streaming) -> int:
    """Returns the exit status: 0 when every cell finished, 1 when any failed. Bad input raises ValueError before
    anything is written."""
    args = parse_args(argv)
    if args.collect and not args.recipe:
        plan = load_plan(args.sweep_dir)
    else:
        grid = parse_grid_tokens(args.grid)
        for key, values in (load_grid_file(args.grid_file) if args.grid_file else {}).items():
            if key in grid:
                raise ValueError(f"`{key}` is in both --grid and --grid_file; keep one.")
            grid[key] = values
        for path, what in ((args.accelerate_config, "--accelerate_config"), (args.script, "--script")):
            if path and not Path(path).is_file():
                raise ValueError(f"{what} {path} does not exist.")
        overrides = parse_set_tokens(args.overrides)
        plan = plan_sweep(args.recipe, grid, overrides, args.sweep_dir, not args.no_shared_ref_cache)
    runs_here = not (args.dry_run or args.print_only or args.slurm)  # printed commands say plain `accelerate`
    accelerate = default_accelerate() if runs_here else "accelerate"
    commands = {
        cell.name: build_launch_command(plan.recipe_path(cell), args.script, args.accelerate_config, accelerate)
        for cell in plan.cells
    }
    if args.dry_run:
        for index, cell in enumerate(plan.cells, 1):
            done = " (finished, would skip)" if is_finished(plan.output_dir(cell)) else ""
            print(f"cell {index}/{len(plan.cells)} {cell.name}{done}: {' '.join(commands[cell.name])}")
        print(f"Dry run: {len(plan.cells)} cells are valid; nothing was written.")
        return 0
    if not args.collect:
        write_plan(plan)
    if args.print_only:
        for cell in plan.cells:
            prefix = "# finished: " if is_finished(plan.output_dir(cell)) else ""
            print(prefix + " ".join(commands[cell.name]))
        return 0
    if args.slurm:
        template = build_launch_command("{recipe}", args.script, args.accelerate_config)
        path = plan.folder.slurm_script
        write_text_atomic(path, slurm_array_script(plan, template, args.slurm_gpus, args.slurm_max_parallel))
        print(f"Wrote {path} ({len(plan.cells)} array tasks). Submit it with: sbatch {path}")
        return 0
    state = {} if args.collect else run_cells(plan, commands, runner)
    csv_path, md_path, table = write_results(plan)
    print(f"\n{table}\nResults: {csv_path} and {md_path}")
    failed = [cell.name for cell in plan.cells if state.get(cell.name, {}).get("status") == "failed"]
    if failed:
        print(f"{len(failed)} cell(s) failed: {', '.join(failed)}. Re-run the same command to retry them.")
    return 1 if failed else 0


def cli() -> int:
    try:
        return main()
    except ValueError as err:
        sys.exit(f"error: {err}")
