"""scripts/sweep.py: grid parsing and validation, cell recipes, the run loop (with a fake runner that plays the training
script), skip/resume, failures, --print/--dry_run/--slurm, results.csv/results.md; and one real 2x2 sweep."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adadpo.cli import plot_runs
from adadpo.cli import sweep as sweep_script
from adadpo.recipe import config_fields
from adadpo.sweep.grid import cell_name, expand_grid, validate_and_normalize
from adadpo.sweep.parse import parse_grid_tokens, parse_set_tokens
from tests.helpers.runs import REPO_ROOT


BASE_RECIPE = {
    "model_name_or_path": "tiny-model",
    "dataset_name": "prefs.jsonl",
    "loss_type": "adadpo",
    "learning_rate": "5e-7",  # YAML 1.1 reads this as text; the cell recipes must carry a float
    "max_steps": 2,
}


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(BASE_RECIPE))
    return path


class FakeRunner:
    """Plays `run_adadpo.py`: reads the cell recipe from the command, writes all_results.json (metrics computed from
    the recipe, so the test can check each row got its own cell's numbers), or fails for chosen cells."""

    def __init__(self, fail_cells=(), returncode=3):
        self.calls, self.fail_cells, self.returncode = [], set(fail_cells), returncode

    def __call__(self, command, log_path):
        recipe = yaml.safe_load(Path(command[command.index("--config") + 1]).read_text())
        self.calls.append((command, recipe))
        log_path.write_text("fake run\n")
        if Path(recipe["output_dir"]).name in self.fail_cells:
            return self.returncode
        out = Path(recipe["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        metrics = {"train_loss": recipe["learning_rate"] * 1e6, "eval_rewards/accuracies": recipe.get("beta", 0.0) * 2}
        (out / "all_results.json").write_text(json.dumps(metrics))
        return 0


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_grid_tokens_are_read_as_yaml_values():
    grid = parse_grid_tokens(
        ["learning_rate=3.0e-7,5e-7", "loss_type=dpo,adadpo", "adadpo_length_normalize=true,false"]
    )
    assert grid["learning_rate"] == [3.0e-7, "5e-7"]  # YAML text; normalized against the field type below
    assert grid["loss_type"] == ["dpo", "adadpo"]
    assert grid["adadpo_length_normalize"] == [True, False]
    assert parse_grid_tokens(["lora_target_modules=[q_proj,v_proj],[k_proj]"]) == {
        "lora_target_modules": [["q_proj", "v_proj"], ["k_proj"]]
    }
    assert parse_set_tokens(["max_steps=2", "beta=1.0e-2"]) == {"max_steps": 2, "beta": 0.01}


@pytest.mark.parametrize("token", ["learning_rate", "=1,2", "beta="])
def test_malformed_grid_token_is_rejected(token):
    with pytest.raises(ValueError, match="key=value"):
        parse_grid_tokens([token])


def test_normalize_turns_yaml_text_floats_into_floats():
    recipe, grid, overrides = validate_and_normalize(
        BASE_RECIPE, {"beta": ["1e-2", 0.05]}, {"warmup_steps": "1e-1"}, True
    )
    assert recipe["learning_rate"] == 5e-7 and isinstance(recipe["learning_rate"], float)
    assert grid["beta"] == [0.01, 0.05]
    assert overrides["warmup_steps"] == 0.1


def test_every_problem_is_reported_at_once_with_the_fix():
    with pytest.raises(ValueError) as err:
        validate_and_normalize(
            {**BASE_RECIPE, "torch_dtype": "bfloat16", "gamma": 0.5},
            {"learnin_rate": [1e-6], "beta": [0.1], "output_dir": ["x"]},
            {"beta": 0.2, "ref_logps_cache_dir": "c"},
            True,
        )
    message = str(err.value)
    assert "did you mean `learning_rate`" in message
    assert "use `simpo_gamma`" in message  # the renamed-key hint from adadpo.recipe
    assert "torch_dtype" not in message  # renamed with one exact translation: accepted (run_adadpo reads it)
    assert "`output_dir` is set by the sweep" in message
    assert "--no_shared_ref_cache" in message
    assert "`beta` is both a grid axis and a --set override" in message


def test_bad_values_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match=r"grid `learning_rate` lists a value twice: \[5e-07, 5e-07\]"):
        validate_and_normalize(BASE_RECIPE, {"learning_rate": ["5e-7", 5.0e-7]}, {}, True)
    with pytest.raises(ValueError, match="`beta` must be a number"):
        validate_and_normalize(BASE_RECIPE, {"beta": ["abc"]}, {}, True)
    with pytest.raises(ValueError, match=r"unknown loss 'dpoo' \(`loss_type`\); registered losses are: .*adadpo"):
        validate_and_normalize(BASE_RECIPE, {"loss_type": ["dpo", "dpoo"]}, {}, True)
    with pytest.raises(ValueError, match="same hub_model_id 'me/m'.*push_to_hub=false"):
        validate_and_normalize({**BASE_RECIPE, "push_to_hub": True, "hub_model_id": "me/m"}, {"beta": [0.1]}, {}, True)
    with pytest.raises(ValueError, match="`bf16` must be true or false"):
        validate_and_normalize(BASE_RECIPE, {"bf16": ["maybe"]}, {}, True)


def test_cells_are_the_cartesian_product_with_stable_names():
    cells = expand_grid({"learning_rate": [3e-7, 5e-7], "loss_type": ["dpo", "adadpo"]})
    assert [c.name for c in cells] == [
        "lr-3e-07_loss-dpo",
        "lr-3e-07_loss-adadpo",
        "lr-5e-07_loss-dpo",
        "lr-5e-07_loss-adadpo",
    ]
    assert cells[1].overrides == {"learning_rate": 3e-7, "loss_type": "adadpo"}
    assert cell_name({"dataset_name": "data/a b.jsonl"}) == "dataset_name-data-a-b.jsonl"
    with pytest.raises(ValueError, match="same cell"):
        expand_grid({"run_tag": ["a/b", "a b"]})


def test_sweep_writes_resolved_recipes_runs_cells_and_collects_results(tmp_path, recipe, capsys):
    sweep_dir = tmp_path / "sweep"
    argv = ["--recipe", str(recipe), "--sweep_dir", str(sweep_dir), "--set", "max_steps=3"]
    argv += ["--grid", "learning_rate=3.0e-7,1e-6", "loss_type=dpo,adadpo", "--accelerate_config", str(recipe)]
    runner = FakeRunner()
    assert sweep_script.main(argv, runner=runner) == 0

    assert len(runner.calls) == 4
    command, first = runner.calls[0]
    assert command[1:4] == ["launch", "--config_file", str(recipe)]
    assert command[command.index("--config") - 1].endswith("run_adadpo.py")
    text = (sweep_dir / "recipes" / "lr-3e-07_loss-dpo.yaml").read_text()
    assert "learning_rate: 3.0e-07" in text  # reads back as a float, never the string '3e-7'
    assert first["learning_rate"] == 3e-7 and first["loss_type"] == "dpo" and first["max_steps"] == 3
    assert first["output_dir"] == str(sweep_dir.resolve() / "lr-3e-07_loss-dpo")
    assert first["precompute_ref_log_probs"] is True
    assert first["ref_logps_cache_dir"] == str(sweep_dir.resolve() / "ref_cache")

    rows = read_csv(sweep_dir / "results.csv")
    assert [row["cell"] for row in rows] == [
        "lr-3e-07_loss-dpo",
        "lr-3e-07_loss-adadpo",
        "lr-1e-06_loss-dpo",
        "lr-1e-06_loss-adadpo",
    ]
    assert list(rows[0])[:6] == ["cell", "learning_rate", "loss_type", "beta", "status", "returncode"]
    for row in rows:
        # beta is not in the recipe: the row reports the default the run trained with
        assert row["status"] == "finished" and float(row["beta"]) == config_fields()["beta"].default
        assert float(row["train_loss"]) == pytest.approx(float(row["learning_rate"]) * 1e6)
    table = (sweep_dir / "results.md").read_text()
    assert "| cell | learning_rate | loss_type | beta | status |" in table
    assert table.count("| finished |") == 4 and "4/4 cells finished" in table
    out = capsys.readouterr().out
    assert "cell 3/4 lr-1e-06_loss-dpo: running" in out

    # Re-running the same command skips every cell and says why; the results are collected again.
    (sweep_dir / "results.csv").unlink()
    rerun = FakeRunner()
    assert sweep_script.main(argv, runner=rerun) == 0
    assert rerun.calls == []
    assert capsys.readouterr().out.count("skipped, already finished") == 4
    assert len(read_csv(sweep_dir / "results.csv")) == 4


def test_failed_cell_is_recorded_the_others_run_and_a_rerun_retries_it(tmp_path, recipe):
    sweep_dir = tmp_path / "sweep"
    argv = ["--recipe", str(recipe), "--sweep_dir", str(sweep_dir), "--grid", "beta=0.01,0.1,1.0"]
    runner = FakeRunner(fail_cells={"beta-0.1"}, returncode=3)
    assert sweep_script.main(argv, runner=runner) == 1
    assert len(runner.calls) == 3
    rows = {row["cell"]: row for row in read_csv(sweep_dir / "results.csv")}
    assert rows["beta-0.1"]["status"] == "failed" and rows["beta-0.1"]["returncode"] == "3"
    assert rows["beta-1"]["status"] == "finished" and float(rows["beta-1"]["eval_rewards/accuracies"]) == 2.0
    assert "| failed | 3 |" in (sweep_dir / "results.md").read_text()

    retry = FakeRunner()
    assert sweep_script.main(argv, runner=retry) == 0
    assert [Path(recipe["output_dir"]).name for _, recipe in retry.calls] == ["beta-0.1"]
    assert all(row["status"] == "finished" for row in read_csv(sweep_dir / "results.csv"))


def test_exit_zero_without_all_results_counts_as_failed(tmp_path, recipe):
    argv = ["--recipe", str(recipe), "--sweep_dir", str(tmp_path / "s"), "--grid", "beta=0.1"]
    assert sweep_script.main(argv, runner=lambda command, log: 0) == 1
    assert read_csv(tmp_path / "s" / "results.csv")[0]["status"] == "failed"


def test_bad_input_raises_before_anything_is_written(tmp_path, recipe):
    sweep_dir = tmp_path / "sweep"
    for argv in (
        ["--grid", "learning_rat=1e-6"],
        ["--grid", "beta=0.1", "--accelerate_config", str(tmp_path / "missing.yaml")],
        ["--grid", "beta=0.1", "--grid_file", str(tmp_path / "missing.yaml")],
    ):
        with pytest.raises(ValueError):
            sweep_script.main(["--recipe", str(recipe), "--sweep_dir", str(sweep_dir), *argv], runner=FakeRunner())
    assert not sweep_dir.exists()


def test_a_finished_cell_with_a_changed_recipe_is_an_error(tmp_path, recipe):
    argv = ["--recipe", str(recipe), "--sweep_dir", str(tmp_path / "s"), "--grid", "beta=0.1"]
    assert sweep_script.main(argv, runner=FakeRunner()) == 0
    with pytest.raises(ValueError, match=r"different recipe \(max_steps changed\).*new --sweep_dir"):
        sweep_script.main([*argv, "--set", "max_steps=5"], runner=FakeRunner())


def test_grid_file_dry_run_and_print(tmp_path, recipe, capsys):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("learning_rate: [3.0e-7, 5.0e-7]\nloss_type: dpo\n")
    sweep_dir = tmp_path / "sweep"
    base = ["--recipe", str(recipe), "--sweep_dir", str(sweep_dir), "--grid_file", str(grid_file)]
    assert sweep_script.main([*base, "--dry_run"], runner=FakeRunner()) == 0
    assert "2 cells are valid" in capsys.readouterr().out and not sweep_dir.exists()

    assert sweep_script.main([*base, "--print"], runner=FakeRunner()) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("accelerate launch ")
    recipe_path = Path(lines[1].split("--config ")[1])
    assert yaml.safe_load(recipe_path.read_text())["learning_rate"] == 5e-7
    assert not (sweep_dir / "results.csv").exists()


def test_slurm_writes_a_valid_array_script(tmp_path, recipe):
    sweep_dir = tmp_path / "sweep"
    argv = ["--recipe", str(recipe), "--sweep_dir", str(sweep_dir), "--grid", "beta=0.01,0.1", "loss_type=dpo,adadpo"]
    assert sweep_script.main([*argv, "--slurm", "--slurm_max_parallel", "2"], runner=FakeRunner()) == 0
    script = (sweep_dir / "sweep.slurm").read_text()
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --gres=gpu:8" in script
    assert "accelerate launch" in script and '--config "$RECIPE"' in script
    subprocess.run(["bash", "-n", str(sweep_dir / "sweep.slurm")], check=True)  # syntax check
    assert (sweep_dir / "logs").is_dir()  # slurm does not create its --output folder

    # After the array ran (played here by the fake runner), --collect needs only the sweep folder.
    runner = FakeRunner()
    for path in sorted((sweep_dir / "recipes").glob("*.yaml"))[:3]:
        runner(["--config", str(path)], tmp_path / "log")
    assert sweep_script.main(["--sweep_dir", str(sweep_dir), "--collect"]) == 0
    statuses = [row["status"] for row in read_csv(sweep_dir / "results.csv")]
    assert sorted(statuses) == ["finished", "finished", "finished", "pending"]


@pytest.mark.slow
def test_real_2x2_sweep_shares_one_reference_pass_and_plots(tmp_path, monkeypatch):
    """The real thing: accelerate launch + scripts/run_adadpo.py on the tiny model, lr x loss_type (dpo, adadpo)."""
    from adadpo.files import write_jsonl_atomic
    from adadpo.plotting.runs import load_run, plot_training_dynamics
    from adadpo.sweep.runs import run_streaming
    from adadpo.testing import make_preference_rows, save_tiny_model

    for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
        monkeypatch.setenv(key, value)
    recipe = {
        "model_name_or_path": str(save_tiny_model(tmp_path / "model")),
        "dataset_name": str(write_jsonl_atomic(tmp_path / "prefs.jsonl", make_preference_rows(16, seed=0))),
        "test_split_size": 0.25,
        "eval_strategy": "steps",
        "eval_steps": 1,
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 2,
        "max_length": 64,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "bf16": False,
        "use_cpu": True,
        "seed": 0,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    sweep_dir = tmp_path / "sweep"
    argv = ["--recipe", str(recipe_path), "--sweep_dir", str(sweep_dir), "--grid", "learning_rate=1.0e-3,1.0e-4"]
    argv += ["loss_type=dpo,adadpo", "--accelerate_config", str(REPO_ROOT / "accelerate_configs" / "cpu.yaml")]
    commands = []

    def counting_runner(command, log_path):
        commands.append(command)
        return run_streaming(command, log_path)

    status = sweep_script.main(argv, runner=counting_runner)
    logs = "\n".join(p.read_text()[-3000:] for p in sorted((sweep_dir / "logs").glob("*.log")))
    assert status == 0, logs
    assert len(commands) == 4 and all(c[1] == "launch" for c in commands)

    rows = read_csv(sweep_dir / "results.csv")
    assert len(rows) == 4 and all(row["status"] == "finished" for row in rows)
    assert {(row["learning_rate"], row["loss_type"]) for row in rows} == {
        (lr, loss) for lr in ("0.001", "0.0001") for loss in ("dpo", "adadpo")
    }
    for row in rows:
        assert math.isfinite(float(row["train_loss"])) and 0.0 <= float(row["eval_rewards/accuracies"]) <= 1.0
    table = (sweep_dir / "results.md").read_text()
    assert table.count("| finished |") == 4 and "eval_rewards/accuracies" in table

    # One reference pass for the whole grid: every cell has the same reference model and data, so the shared
    # cache holds exactly one entry per split (train, eval), written by the first cell and read by the other three.
    cached = sorted(path.name for path in (sweep_dir / "ref_cache").rglob("*.npz"))
    assert cached == ["eval.npz", "train.npz"], cached

    commands.clear()
    assert sweep_script.main(argv, runner=counting_runner) == 0
    assert commands == []  # every cell skipped
    assert len(read_csv(sweep_dir / "results.csv")) == 4

    runs = [load_run(sweep_dir / row["cell"]) for row in rows]
    assert len(plot_training_dynamics(runs).axes) == 4
    written = plot_runs.main(["--sweep_dir", str(sweep_dir), "--out", str(tmp_path / "plots")])
    assert {p.name for p in written} >= {"training_dynamics.png", "grad_balance.png"}
    assert any(p.name.startswith("metric_vs_beta_") for p in written)
    assert all(p.stat().st_size > 10_000 for p in written)


def test_run_streaming_tees_output_and_returns_the_exit_code(tmp_path, capfd):
    from adadpo.sweep.runs import run_streaming

    script = "import sys; print('step 1'); sys.stderr.write('bar 50%\\rbar 100%\\n'); sys.exit(3)"
    log = tmp_path / "logs" / "cell.log"
    assert run_streaming([sys.executable, "-c", script], log) == 3
    assert log.read_bytes() == b"step 1\nbar 50%\rbar 100%\n"  # stderr merged, progress-bar '\r' kept
    assert "step 1" in capfd.readouterr().out


def test_strategy_names_are_not_read_as_booleans():
    from adadpo.sweep.parse import parse_value

    assert parse_value("no") == "no" and parse_value("off") == "off"
    assert parse_value("true") is True and parse_value("False") is False
