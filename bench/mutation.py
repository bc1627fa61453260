"""The mutation check: small, plausible bugs planted one at a time in the code that guards correctness, each of which
the tests named beside it must catch (docs/testing.md).

    python bench/mutation.py [--only NAME ...] [--rev REV] [--list] [--keep]

Each mutant replaces an exact piece of text (found exactly once, or the check stops: a refactor that moves the code
must move the mutant too) in a scratch copy of the repository, the working tree by default (tracked and untracked,
not ignored, files: your uncommitted change is what is checked) or `--rev`'s commit. The tests it names then run
against that copy (`src/` first on the path); the mutant is CAUGHT when they fail, SURVIVED when they pass. The tests
first run once unmutated, and must pass. The repository itself is never written. Exit status: 0 when every mutant is
caught, 1 when one survived (or its tests errored or hung), 2 when an anchor is missing or ambiguous or the unmutated
tests fail. Not run in CI: run it before calling an issue that touches these places resolved (`make mutation`).
"""

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300  # one mutant's tests; a hang is not a catch


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to the repository root
    old: str  # exact text, present exactly once in `file`
    new: str
    tests: tuple[str, ...]  # pytest node ids (file, file::test or file::test[id]) of which one at least must fail
    breaks: str  # one line: what the mutant breaks


RC = "src/adadpo/training/ref_cache.py"
RC_TESTS = "tests/training/test_ref_cache.py::test_each_key_entry_changed_alone_misses"
FAULTS = "tests/training/test_reliability_faults.py"
HUB = "tests/hub/test_hub_checkpoints.py"
PREFLIGHT = "tests/preflight/test_preflight.py"
PREEMPTION = "tests/training/test_preemption.py"
OOM_SPLIT_TEST = (
    "tests/training/test_oom_resplit.py::test_an_out_of_memory_forward_is_split_and_trains_as_if_it_fit[adadpo-padded]"
)

MUTANTS = [
    # ---- Issue 25's six: defects the suite could not see ---------------------------------------------------------
    Mutant(
        "ref-cache-key-without-weights",
        RC,
        '            "weights": weights_fingerprint(\n'
        '                base, reduce_sum=lambda t: accelerator.reduce(t.to(accelerator.device), reduction="sum")\n'
        "            ),\n",
        "",
        (f"{RC_TESTS}[weights]",),
        "a fine-tune saved over the same folder reuses the old weights' reference log-probs",
    ),
    Mutant(
        "ref-cache-key-without-truncation-mode",
        RC,
        '            "truncation_mode": args.truncation_mode,\n',
        "",
        (f"{RC_TESTS}[truncation_mode]",),
        "keep_end trains on keep_start's cached reference log-probs",
    ),
    Mutant(
        "preflight-packing-control-forced-pass",
        "src/adadpo/preflight/packing.py",
        "PASS if control_gap > 1 else FAIL",
        "PASS",
        (f"{PREFLIGHT}::test_fails_when_the_negative_control_cannot_differ",),
        "a packing check blind to cross-sequence leaks reports PASS",
    ),
    Mutant(
        "nonfinite-count-never-reset",
        "src/adadpo/training/nonfinite.py",
        "            if self._grads_finite(optimizer):\n                self.consecutive = 0\n",
        "            if self._grads_finite(optimizer):\n",
        (f"{FAULTS}::test_isolated_nonfinite_steps_do_not_add_up_to_a_stop",),
        "isolated bad steps add up and stop a healthy run",
    ),
    Mutant(
        "hub-resume-world-size-one-sided",
        "src/adadpo/hub/resume.py",
        "if ranks and len(ranks) != world_size:",
        "if ranks and len(ranks) > world_size:",
        (f"{HUB}::test_resume_from_the_hub_refuses_a_deepspeed_checkpoint_of_any_other_process_count[1-2]",),
        "more processes than ZeRO shards resume a checkpoint DeepSpeed cannot re-partition",
    ),
    Mutant(
        "resume-skipped-step-count-not-restored",
        "src/adadpo/training/checkpointing.py",
        '        trainer.nonfinite_guard.total_skipped = counters["nonfinite_steps"]\n',
        "",
        (f"{FAULTS}::test_resume_restores_the_count_of_skipped_steps",),
        "a resumed run logs nonfinite_steps from 0 again",
    ),
    # ---- Losses --------------------------------------------------------------------------------------------------
    Mutant(
        "loss-margin-sign",
        "src/adadpo/losses/pairwise.py",
        "z = beta_w * terms.score_w - beta_l * terms.score_l - margin",
        "z = beta_w * terms.score_w - beta_l * terms.score_l + margin",
        ("tests/losses/test_losses_formulas.py::test_ipo_is_length_normalized_with_margin_one_over_two_tau",),
        "every target margin (IPO's 1/(2 beta), SimPO's gamma, R-DPO's length term) pushes the wrong way",
    ),
    Mutant(
        "rdpo-length-term-sign",
        "src/adadpo/losses/dpo_family.py",
        "margin=-rdpo_alpha * (inputs.chosen_lengths - inputs.rejected_lengths)",
        "margin=rdpo_alpha * (inputs.chosen_lengths - inputs.rejected_lengths)",
        ("tests/losses/test_losses_formulas.py::test_rdpo_uses_each_pairs_token_counts",),
        "R-DPO rewards length instead of penalising it",
    ),
    Mutant(
        "adadpo-clip-ignored",
        "src/adadpo/losses/balance.py",
        "log_ratio=log_target.clamp(max=min(log_clip, LOG_COEF_CAP)),",
        "log_ratio=log_target.clamp(max=LOG_COEF_CAP),",
        ("tests/losses/test_losses_adadpo.py::test_adadpo_default_equals_listing_1",),
        "beta_w grows past adadpo_clip C",
    ),
    Mutant(
        "adadpo-score-slopes-inverted",
        "src/adadpo/losses/balance.py",
        "(terms.log_slope_l - terms.log_slope_w)",
        "(terms.log_slope_w - terms.log_slope_l)",
        ("tests/losses/test_losses_balance.py::test_every_base_ada_variant_balances_its_own_space",),
        "the Ada- variants of length-normalised scores (AdaIPO, AdaSimPO, ...) balance by |yl|/|yw| instead of |yw|/|yl|",
    ),
    Mutant(
        "alpha-dpo-ema-weights-swapped",
        "src/adadpo/losses/normalizer.py",
        "self.mean = mean if self.mean is None else m * self.mean + (1.0 - m) * mean",
        "self.mean = mean if self.mean is None else (1.0 - m) * self.mean + m * mean",
        ("tests/losses/test_losses_normalizer.py::test_ema_matches_hand_computation_and_starts_from_first_batch",),
        "alpha-DPO's running margin mean follows the last batch instead of averaging",
    ),
    Mutant(
        "nll-pair-average-not-batch",
        "src/adadpo/losses/simpo_family.py",
        "nw = nw.mean().expand_as(nw)",
        "nw = nw",
        ("tests/losses/test_losses_formulas.py::test_cpo",),
        "CPO/ORPO/SimPO's NLL term averages per pair, not over the micro-batch's chosen tokens as TRL does",
    ),
    # ---- Log-probs and packing -----------------------------------------------------------------------------------
    Mutant(
        "packed-labels-cross-sequence",
        "src/adadpo/training/packing.py",
        "(sequence_ids[:, 1:] == sequence_ids[:, :-1]) & (sequence_ids[:, 1:] >= 0)",
        "(sequence_ids[:, 1:] >= 0)",
        ("tests/training/test_packing.py::test_packed_equals_padded",),
        "a packed sequence's first token is scored from the previous sequence's last",
    ),
    Mutant(
        "packed-positions-not-restarted",
        "src/adadpo/training/collators.py",
        "position_ids[r, start:end] = torch.arange(lengths[s])",
        "position_ids[r, start:end] = torch.arange(start, end)",
        ("tests/training/test_packing.py::test_collator_hand_example",),
        "packed sequences attend across each other (no restart marks a boundary)",
    ),
    Mutant(
        "padded-scored-off-by-one",
        "src/adadpo/training/logps.py",
        "scored = (labels[:, 1:] != IGNORE_INDEX).reshape(-1)",
        "scored = (labels[:, :-1] != IGNORE_INDEX).reshape(-1)",
        ("tests/training/test_packing.py::test_packed_equals_padded",),
        "padded batches score the prompt's last token and drop the completion's last",
    ),
    Mutant(
        "ld-dpo-weight-boundary",
        "src/adadpo/training/logps.py",
        "torch.where(position <= shared[owner], 1.0, ld_alpha)",
        "torch.where(position < shared[owner], 1.0, ld_alpha)",
        ("tests/training/test_trl_options.py::test_a_run_with_trl_options_computes_trls_loss[ld_alpha]",),
        "LD-DPO down-weights the last shared token of the longer completion",
    ),
    # ---- Gradient accumulation -----------------------------------------------------------------------------------
    Mutant(
        "accumulation-ignores-processes",
        "src/adadpo/training/launch_checks.py",
        "    return global_batch_size // per_step\n",
        "    return global_batch_size // per_device_batch_size\n",
        ("tests/test_configs.py::test_gradient_accumulation_keeps_the_global_batch",),
        "the global batch grows with the process count",
    ),
    Mutant(
        "accumulation-derived-not-applied",
        "src/adadpo/training/launch_checks.py",
        "        if accumulation != training_args.gradient_accumulation_steps:\n",
        "        if False:\n",
        ("tests/training/test_grad_accumulation.py::test_batch_pairs_counts_the_pairs_of_each_optimizer_step[1]",),
        "global_batch_size is read but the optimizer step sees one micro-batch",
    ),
    # ---- Reference-cache key -------------------------------------------------------------------------------------
    Mutant(
        "ref-cache-key-without-max-length",
        RC,
        '            "max_length": args.max_length,\n',
        "",
        (f"{RC_TESTS}[max_length]",),
        "another truncation length reuses the cached reference log-probs",
    ),
    # ---- Checkpoint and resume -----------------------------------------------------------------------------------
    Mutant(
        "normalizer-not-checkpointed",
        "src/adadpo/training/checkpointing.py",
        '    if "margin_normalizer" in loss_state:\n',
        "    if False:\n",
        (f"{FAULTS}::test_crash_while_writing_a_checkpoint_keeps_the_previous_one[transformers_save]",),
        "alpha-DPO's margin statistics restart from nothing on resume",
    ),
    Mutant(
        "resume-token-count-not-restored",
        "src/adadpo/training/checkpointing.py",
        '        trainer.total_train_tokens = counters["num_tokens"]\n',
        "",
        (f"{FAULTS}::test_sigkill_after_checkpoint_then_resume_equals_uninterrupted_run",),
        "num_tokens counts from 0 again after a resume",
    ),
    Mutant(
        "nan-weights-checkpointed",
        "src/adadpo/training/nonfinite.py",
        "if param.numel() and not torch.isfinite(param.detach()).all():",
        "if False:",
        (f"{FAULTS}::test_checkpoint_with_nan_weights_is_refused",),
        "a checkpoint with NaN weights is written (and resumed from)",
    ),
    # ---- Hub push and resume -------------------------------------------------------------------------------------
    Mutant(
        "hub-stale-files-kept",
        "src/adadpo/hub/checkpoints.py",
        "operations += [CommitOperationDelete(path_in_repo=f) for f in stale]",
        "operations += []",
        (f"{HUB}::test_one_push_in_flight_and_the_newest_checkpoint_supersedes_a_queued_one[checkpoint]",),
        "last-checkpoint/ keeps files of an older checkpoint beside the newer one's",
    ),
    Mutant(
        "hub-queue-keeps-oldest",
        "src/adadpo/hub/checkpoints.py",
        "keep = ordered if self.strategy == HubStrategy.ALL_CHECKPOINTS else ordered[-1:]",
        "keep = ordered if self.strategy == HubStrategy.ALL_CHECKPOINTS else ordered[:1]",
        (f"{HUB}::test_one_push_in_flight_and_the_newest_checkpoint_supersedes_a_queued_one[checkpoint]",),
        "a queued older checkpoint is pushed instead of the newest",
    ),
    Mutant(
        "hub-final-push-with-checkpoints",
        "src/adadpo/hub/push.py",
        "ignore_patterns=not_pushed_at_the_end(),",
        "ignore_patterns=None,",
        ("tests/hub/test_hub.py::test_successful_push_uploads_model_tokenizer_and_card",),
        "the end-of-training push uploads every checkpoint folder too",
    ),
    # ---- Preflight -----------------------------------------------------------------------------------------------
    Mutant(
        "preflight-reference-row-forced-pass",
        "src/adadpo/preflight/identity.py",
        'PASS if worst["ratio"] <= 1 else FAIL',
        "PASS",
        (f"{PREFLIGHT}::test_fails_on_a_reference_cache_entry_from_other_weights",),
        "a reference (or cache entry) of other weights passes preflight",
    ),
    Mutant(
        "preflight-step0-loss-forced-pass",
        "src/adadpo/preflight/identity.py",
        'PASS if worst["loss"] <= tol else FAIL',
        "PASS",
        (f"{PREFLIGHT}::test_fails_on_a_reference_cache_entry_from_other_weights",),
        "a step-0 loss other than the closed form passes preflight",
    ),
    Mutant(
        "preflight-double-bos-missed",
        "src/adadpo/preflight/tokens.py",
        "_leading(fulls[0], tokenizer.bos_token_id) > 1",
        "_leading(fulls[0], tokenizer.bos_token_id) > 2",
        (f"{PREFLIGHT}::test_fails_on_a_template_that_adds_a_second_bos",),
        "a chat template that adds a second BOS passes preflight",
    ),
    # ---- Data split ----------------------------------------------------------------------------------------------
    Mutant(
        "split-ignores-run-seed",
        "src/adadpo/data.py",
        "train_test_split(test_size=test_size, seed=seed, shuffle=True)",
        "train_test_split(test_size=test_size, seed=42, shuffle=True)",
        ("tests/test_data.py::test_split_seed_is_the_run_seed_unless_the_mixture_names_its_own",),
        "--seed no longer draws the held-out split",
    ),
    Mutant(
        "split-held-out-rows-trained-on",
        "src/adadpo/data.py",
        'splits = {"train": split["train"], "test": split["test"]}',
        'splits = {"train": splits["train"], "test": split["test"]}',
        ("tests/test_data.py::test_mixture_weights_split_and_column_mapping",),
        "the evaluation rows are also trained on",
    ),
    Mutant(
        "mixture-weight-takes-first-rows",
        "src/adadpo/data.py",
        "parts.append(ds.shuffle(seed=seed).select(range(int(len(ds) * weight))))",
        "parts.append(ds.select(range(int(len(ds) * weight))))",
        ("tests/test_data.py::test_mixture_weight_draws_its_rows_after_shuffling",),
        "a mixture's weight fraction is the dataset's first rows (biased on sorted data)",
    ),
    # ---- IFEval scoring ------------------------------------------------------------------------------------------
    Mutant(
        "ifeval-instruction-level-mean-of-means",
        "src/adadpo/evaluation/ifeval.py",
        "            flat = [x for p in scored for x in p[metric]]\n            result[metric] = sum(flat) / len(flat)\n",
        "            result[metric] = sum(sum(p[metric]) / len(p[metric]) for p in scored) / len(scored)\n",
        ("tests/evaluation/test_ifeval.py::test_four_numbers_equal_lm_eval_process_results",),
        "instruction-level accuracy averages per prompt instead of pooling instructions (not lm-eval's number)",
    ),
    Mutant(
        "ifeval-ranking-score-loose",
        "src/adadpo/evaluation/ifeval.py",
        'sum(p["inst_level_strict_acc"]) / len(p["inst_level_strict_acc"])',
        'sum(p["inst_level_loose_acc"]) / len(p["inst_level_loose_acc"])',
        ("tests/evaluation/test_scoring.py::test_ifeval_scorer_is_fraction_of_instructions_followed",),
        "on-policy pairs are ranked by the loose score, not the strict one",
    ),
    Mutant(
        "pair-selection-prefers-longer",
        "src/adadpo/evaluation/scoring.py",
        "chosen = min(order, key=lambda i: (-scores[i], lengths[i], i))",
        "chosen = min(order, key=lambda i: (-scores[i], -lengths[i], i))",
        ("tests/evaluation/test_scoring.py::test_select_pair_best_vs_worst_with_length_tie_breaks",),
        "among equally scored samples the longest is chosen (a length bias in generated pairs)",
    ),
    # ---- Issue 23: stop signals, automatic resume, OOM re-split, a full disk while saving --------------------------
    Mutant(
        "stop-signal-does-not-stop",
        "src/adadpo/training/preemption.py",
        "            control.should_training_stop = True\n",
        "",
        (f"{PREEMPTION}::test_sigterm_checkpoints_exits_75_and_the_same_command_resumes_as_if_uninterrupted",),
        "a stop signal does not stop training: the scheduler kills the run mid-step after the grace time",
    ),
    Mutant(
        "oom-early-parts-not-backpropagated",
        "src/adadpo/training/trainer.py",
        "                    backward_as_training_step(self, surrogate, self._num_items_in_batch)\n",
        "                    pass\n",
        (OOM_SPLIT_TEST,),
        "a split micro-batch trains on its last part only",
    ),
    Mutant(
        "oom-early-parts-not-scaled-for-accumulation",
        "src/adadpo/training/trl_compat.py",
        "loss = loss / trainer.current_gradient_accumulation_steps",
        "loss = loss",
        (OOM_SPLIT_TEST,),
        "a split micro-batch's early parts weigh gradient_accumulation_steps times too much",
    ),
    Mutant(
        "checkpoint-write-error-keeps-staging",
        "src/adadpo/training/checkpointing.py",
        "            shutil.rmtree(staged, ignore_errors=True)\n            with contextlib.suppress(OSError):",
        "            with contextlib.suppress(OSError):",
        (f"{FAULTS}::test_crash_while_writing_a_checkpoint_keeps_the_previous_one[normalizer_file]",),
        "a full disk leaves the half-written staged checkpoint behind",
    ),
    Mutant(
        "auto-resume-takes-an-incomplete-checkpoint",
        "src/adadpo/hub/resume.py",
        "        if (checkpoint / TRAINER_STATE).is_file():",
        "        if True:",
        (f"{HUB}::test_auto_resume_takes_the_newest_complete_local_checkpoint_else_the_hubs_else_starts_fresh",),
        "a checkpoint folder without its trainer state (copied in part) is resumed from",
    ),
    Mutant(
        "slurm-requeues-a-finished-run",
        "scripts/slurm/launch.slurm",
        "if [[ $STATUS != 0 && ( $WARNED == 1",
        "if [[ ( $WARNED == 1",
        (
            "tests/training/test_accelerate_configs.py::test_slurm_script_forwards_the_warning_signal_and_requeues_unless_the_run_finished",
        ),
        "a run that finished after the warning is requeued and trains again",
    ),
]


def _git(*args: str, stdout=subprocess.PIPE) -> bytes:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, check=True, stdout=stdout).stdout


def scratch_copy(dest: Path, rev: str | None) -> None:
    """The repository's files in `dest`: `rev`'s commit, or the working tree (tracked and untracked files that git
    does not ignore, as they are on disk now)."""
    if rev is not None:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
        with tarfile.open(fileobj=io.BytesIO(_git("archive", "--format=tar", rev))) as archive:
            archive.extractall(dest, **safe)
        return
    for name in _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").decode().split("\0"):
        source = REPO_ROOT / name
        if name and source.is_file() and not source.is_symlink():  # a deleted tracked file is not there
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def anchor_problems(root: Path, mutants: list[Mutant]) -> list[str]:
    """Every mutant's text must be in its file exactly once (and its name unique)."""
    problems, seen = [], set()
    for mutant in mutants:
        if mutant.name in seen:
            problems.append(f"{mutant.name}: the name is used twice")
        seen.add(mutant.name)
        path = root / mutant.file
        count = path.read_text().count(mutant.old) if path.is_file() else None
        if count != 1:
            where = "the file is missing" if count is None else f"its text is found {count} times, not once"
            problems.append(f"{mutant.name}: {mutant.file}: {where}")
        if not mutant.tests:
            problems.append(f"{mutant.name}: no tests named")
    return problems


def test_env(root: Path) -> dict[str, str]:
    """The scratch copy's `src` first on the path (ahead of the editable install), offline, no bytecode written (a
    file restored within the same second as its mutant must not reuse the mutant's cached bytecode)."""
    path = [str(root / "src"), os.environ.get("PYTHONPATH", "")]
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    quiet = {"TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1", "WANDB_DISABLED": "true"}
    return {
        **os.environ,
        **offline,
        **quiet,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
    }


def run_tests(root: Path, tests, first_failure_stops: bool, timeout: float) -> tuple[int | None, float, str]:
    """(pytest's exit status or None on a timeout, seconds, output) of `tests` in the scratch copy."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider"]
    cmd += ["-x"] if first_failure_stops else []
    start = time.monotonic()
    try:
        done = subprocess.run(
            [*cmd, *tests], cwd=root, env=test_env(root), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout or ""
        return None, time.monotonic() - start, output.decode(errors="replace") if isinstance(output, bytes) else output
    return done.returncode, time.monotonic() - start, done.stdout + done.stderr


def first_failed(output: str) -> str:
    found = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return found.group(1) if found else "?"


def check_mutant(root: Path, mutant: Mutant, timeout: float) -> tuple[str, float, str]:
    """(CAUGHT / SURVIVED / ERROR / TIMEOUT, seconds, the failing test or what went wrong), the file restored."""
    path = root / mutant.file
    original = path.read_text()
    path.write_text(original.replace(mutant.old, mutant.new, 1))
    try:
        rc, seconds, output = run_tests(root, mutant.tests, first_failure_stops=True, timeout=timeout)
    finally:
        path.write_text(original)
    if rc is None:
        return "TIMEOUT", seconds, f"its tests ran past {timeout:.0f} s"
    if rc == 1:
        return "CAUGHT", seconds, first_failed(output)
    if rc == 0:
        return "SURVIVED", seconds, "every named test passed"
    return "ERROR", seconds, f"pytest exit status {rc}: " + output.strip().splitlines()[-1][:200]


def imported_from(root: Path) -> str:
    code = "import adadpo; print(adadpo.__file__)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=test_env(root), capture_output=True, text=True, check=True
    ).stdout.strip()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only (names, see --list)")
    parser.add_argument("--rev", help="check this commit instead of the working tree (e.g. HEAD)")
    parser.add_argument("--list", action="store_true", help="print the mutants and the tests that catch each; exit")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy (its path is printed)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds for one mutant's tests")
    return parser.parse_args(argv)


def select(names: list[str] | None, mutants: list[Mutant] = MUTANTS) -> list[Mutant]:
    if not names:
        return list(mutants)
    unknown = sorted(set(names) - {m.name for m in mutants})
    if unknown:
        raise SystemExit(f"unknown mutant(s) {unknown}; see --list")
    return [m for m in mutants if m.name in names]


def main(argv=None, mutants: list[Mutant] = MUTANTS) -> int:
    args = parse_args(argv)
    chosen = select(args.only, mutants)
    if args.list:
        for m in chosen:
            print(f"{m.name}\n    {m.file}: {m.breaks}\n    " + "\n    ".join(m.tests))
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="adadpo-mutation-"))
    shared = REPO_ROOT.parent / "shared"  # the data some tests read beside the checkout (IFEval, HH-RLHF)
    if shared.is_dir():
        (scratch / "shared").symlink_to(shared)
    try:
        return _check(scratch / "repo", chosen, args)
    finally:
        if args.keep:
            print(f"scratch copy kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _check(root: Path, chosen: list[Mutant], args) -> int:
    started = time.monotonic()
    root.mkdir()
    scratch_copy(root, args.rev)
    source = f"commit {args.rev}" if args.rev else "the working tree"
    problems = anchor_problems(root, chosen)
    if problems:
        print(f"Mutants whose text is not in {source} exactly once (move them with the code):")
        print("\n".join(f"  {p}" for p in problems))
        return 2
    where = imported_from(root)
    if not where.startswith(str(root)):
        print(f"the tests would import adadpo from {where}, not from the scratch copy {root}")
        return 2
    baseline = list(dict.fromkeys(test for m in chosen for test in m.tests))
    print(f"{len(chosen)} mutants of {source}, in {root}; their {len(baseline)} tests unmutated first ...", flush=True)
    rc, seconds, output = run_tests(root, baseline, first_failure_stops=False, timeout=4 * args.timeout)
    if rc != 0:
        print(output[-6000:])
        print(f"The tests fail (or error, status {rc}) without any mutant: fix them first ({seconds:.0f} s).")
        return 2
    skipped = re.findall(r"^SKIPPED .*$", output, re.MULTILINE)
    if skipped:  # a skipped test passes whatever the mutant: it could never catch one
        print("\n".join(skipped))
        print("Named tests are skipped here, so they cannot catch a mutant: install what they need.")
        return 2
    print(f"unmutated: pass ({seconds:.0f} s)\n")
    width = max(len(m.name) for m in chosen)
    print(f"{'mutant':<{width}}  {'result':<8}  {'time':>6}  caught by / detail", flush=True)
    results = []
    for mutant in chosen:
        status, seconds, detail = check_mutant(root, mutant, args.timeout)
        results.append(status)
        print(f"{mutant.name:<{width}}  {status:<8}  {seconds:5.0f}s  {detail}", flush=True)
    caught = results.count("CAUGHT")
    total = time.monotonic() - started
    print(f"\n{caught}/{len(results)} caught in {total:.0f} s ({total / 60:.1f} min)")
    for mutant, status in zip(chosen, results, strict=True):
        if status != "CAUGHT":
            print(f"  {status}: {mutant.name} ({mutant.file}): {mutant.breaks}")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
