"""The mutation check's mechanics (`bench/mutation.py`, docs/testing.md), cheaply: every curated mutant's text is in
today's code exactly once and names tests that exist, and on a tiny stand-in repository a mutant is applied to a
scratch copy (never to the repository), reported CAUGHT or SURVIVED with the exit status to match, and a missing
anchor stops the check. The full list runs with `make mutation`, not here."""

import re
import subprocess
import sys

import pytest

from tests.helpers.runs import REPO_ROOT


sys.path.insert(0, str(REPO_ROOT / "bench"))
import mutation  # noqa: E402


def test_every_mutant_text_is_in_todays_code_exactly_once():
    assert mutation.anchor_problems(REPO_ROOT, mutation.MUTANTS) == []


def test_every_named_test_exists():
    for mutant in mutation.MUTANTS:
        for node in mutant.tests:
            path, _, name = node.partition("::")
            source = (REPO_ROOT / path).read_text()
            function = re.sub(r"\[.*\]$", "", name)
            assert not function or f"def {function}(" in source, (mutant.name, node)


def test_the_six_defects_of_issue_25_have_their_mutants():
    names = {m.name for m in mutation.MUTANTS}
    assert {
        "ref-cache-key-without-weights",
        "ref-cache-key-without-truncation-mode",
        "preflight-packing-control-forced-pass",
        "nonfinite-count-never-reset",
        "hub-resume-world-size-one-sided",
        "resume-skipped-step-count-not-restored",
    } <= names


@pytest.fixture
def tiny_repo(tmp_path, monkeypatch):
    """A git working tree with a package named `adadpo` (so the check must import the scratch copy's, not the
    installed one) and its tests; `bench/mutation.py` pointed at it."""
    repo = tmp_path / "repo"
    (repo / "src" / "adadpo").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "src" / "adadpo" / "__init__.py").write_text("")
    (repo / "src" / "adadpo" / "arith.py").write_text("def add(a, b):\n    return a + b\n")
    (repo / "tests" / "test_arith.py").write_text(
        "from adadpo.arith import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)  # untracked files are copied too
    monkeypatch.setattr(mutation, "REPO_ROOT", repo)
    return repo


def _mutant(name, new, old="a + b"):
    return mutation.Mutant(name, "src/adadpo/arith.py", old, new, ("tests/test_arith.py::test_add",), "test only")


def test_a_mutant_is_caught_another_survives_and_the_repository_is_untouched(tiny_repo, capsys):
    before = (tiny_repo / "src" / "adadpo" / "arith.py").read_text()
    mutants = [_mutant("subtracts", "a - b"), _mutant("commutes", "b + a")]
    assert mutation.main([], mutants=mutants) == 1  # one survivor
    out = capsys.readouterr().out
    assert re.search(r"^subtracts\s+CAUGHT\s+\d+s\s+tests/test_arith.py::test_add$", out, re.MULTILINE), out
    assert re.search(r"^commutes\s+SURVIVED\s", out, re.MULTILINE), out
    assert "1/2 caught" in out and "SURVIVED: commutes" in out
    assert (tiny_repo / "src" / "adadpo" / "arith.py").read_text() == before
    assert mutation.main(["--only", "subtracts"], mutants=mutants) == 0


def test_a_missing_or_repeated_anchor_stops_the_check(tiny_repo, capsys):
    mutants = [_mutant("moved", "a * b", old="a+b"), _mutant("twice", "x", old="a")]
    assert mutation.main([], mutants=mutants) == 2
    out = capsys.readouterr().out
    assert "moved: src/adadpo/arith.py: its text is found 0 times, not once" in out
    assert "twice: src/adadpo/arith.py: its text is found" in out


def test_rev_copies_the_commit_not_the_working_tree(tiny_repo, tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "add", "-A"], cwd=tiny_repo, check=True)
    subprocess.run([*git, "commit", "-qm", "tiny"], cwd=tiny_repo, check=True)
    (tiny_repo / "src" / "adadpo" / "arith.py").write_text("def add(a, b):\n    return 0\n")
    (tmp_path / "at_head").mkdir()
    mutation.scratch_copy(tmp_path / "at_head", "HEAD")
    assert "a + b" in (tmp_path / "at_head" / "src" / "adadpo" / "arith.py").read_text()
    (tmp_path / "working").mkdir()
    mutation.scratch_copy(tmp_path / "working", None)
    assert "return 0" in (tmp_path / "working" / "src" / "adadpo" / "arith.py").read_text()
