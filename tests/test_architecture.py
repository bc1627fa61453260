"""The coupling rules of docs/architecture.md, checked on the source: TRL's private modules and the private attributes
of TRL / transformers objects are reached from `adadpo/training/trl_compat.py` alone (the seam, pinned and tested in
tests/training/test_trl_compat.py), and the packages import one way."""

import ast
import inspect
import re
from pathlib import Path

import pytest
from transformers import trainer as transformers_trainer
from trl import DPOTrainer
from trl.trainer import dpo_trainer as trl_dpo

from tests.helpers.runs import REPO_ROOT


SEAM = REPO_ROOT / "src" / "adadpo" / "training" / "trl_compat.py"
PRIVATE_MODULES = ("trl.trainer", "trl.models")
# Private names of TRL's DPOTrainer and everything it inherits (transformers' Trainer), the class attributes and the
# ones their methods set on an instance (`self._metrics = ...`): overriding or touching one is the seam's job.
TRL_PRIVATE = {name for name in dir(DPOTrainer) if name.startswith("_") and not name.startswith("__")} | {
    name
    for module in (trl_dpo, transformers_trainer)
    for name in re.findall(r"self\.(_[a-z]\w*)\s*=", inspect.getsource(module))
}


NAMED_ACCESS = ("getattr", "setattr", "hasattr", "delattr")


def checked_files() -> list[Path]:
    files = [
        *(REPO_ROOT / "src").rglob("*.py"),
        *(REPO_ROOT / "scripts").glob("*.py"),
        *(REPO_ROOT / "bench").glob("*.py"),
    ]
    return sorted(f for f in files if f != SEAM)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def own_private_names(tree: ast.AST) -> set[str]:
    """Private names this file defines itself: `def _x`, `self._x = ...`, module-level `_x = ...`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _private(node.name):
            names.add(node.name)
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name) and leaf.value.id == "self":
                    names.add(leaf.attr)
                elif isinstance(leaf, ast.Name) and _private(leaf.id):
                    names.add(leaf.id)
    return {name for name in names if _private(name)}


# Underscored yet public and documented in the standard library
STANDARD_LIBRARY_PUBLIC = {("os", "_exit")}


def violations(path: Path) -> list[str]:
    return violations_in(path.read_text(), str(path.relative_to(REPO_ROOT)))


def violations_in(source: str, where: str) -> list[str]:
    tree = ast.parse(source, filename=where)
    own = own_private_names(tree) - TRL_PRIVATE
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(PRIVATE_MODULES):
                found.append(f"{where}:{node.lineno} imports from {node.module}")
            if node.module.split(".")[0] in ("trl", "transformers"):
                found += [f"{where}:{node.lineno} imports {a.name}" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Import):
            found += [
                f"{where}:{node.lineno} imports {a.name}" for a in node.names if a.name.startswith(PRIVATE_MODULES)
            ]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in NAMED_ACCESS:
            name = node.args[1] if len(node.args) > 1 else None
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and _private(name.value):
                found.append(f"{where}:{node.lineno} touches .{name.value} through {node.func.id}")
        elif isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.ctx, ast.Load | ast.Store):
            is_self = isinstance(node.value, ast.Name) and node.value.id == "self"
            if isinstance(node.value, ast.Name) and (node.value.id, node.attr) in STANDARD_LIBRARY_PUBLIC:
                continue
            if not is_self or node.attr not in own:
                found.append(f"{where}:{node.lineno} touches .{node.attr}")
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                names = (
                    [item.name]
                    if isinstance(item, ast.FunctionDef)
                    else [t.id for t in getattr(item, "targets", []) if isinstance(t, ast.Name)]
                )
                found += [f"{where}:{item.lineno} overrides {n}" for n in names if n in TRL_PRIVATE]
    return found


def test_only_the_seam_reaches_into_trl_and_transformers():
    assert TRL_PRIVATE >= {"_compute_loss", "_save_checkpoint", "_prepare_dataset", "_tag_names"}
    found = [line for path in checked_files() for line in violations(path)]
    assert found == [], (
        "move these into adadpo/training/trl_compat.py (one seam, commented and tested):\n" + "\n".join(found)
    )


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from trl.trainer.utils import use_adapter\n", "imports from trl.trainer.utils"),
        ("import trl.models.utils\n", "imports trl.models.utils"),
        ("def f(model):\n    return model.config._attn_implementation\n", "touches ._attn_implementation"),
        ("class T:\n    def f(self):\n        return self._metrics\n", "touches ._metrics"),
        ("class T(DPOTrainer):\n    _tag_names = ['x']\n", "overrides _tag_names"),
        ("class T(DPOTrainer):\n    def _compute_loss(self, *a):\n        pass\n", "overrides _compute_loss"),
        ("from transformers.trainer import _is_peft_model\n", "imports _is_peft_model"),
        (
            "def f(config):\n    return getattr(config, '_name_or_path', '?')\n",
            "touches ._name_or_path through getattr",
        ),
        ("class T:\n    def f(self):\n        self._tp_size = 2\n        return self._tp_size\n", "touches ._tp_size"),
    ],
)
def test_the_rule_catches_each_kind_of_reach(source, expected):
    found = violations_in(source, "probe.py")
    assert any(expected in line for line in found), found


def test_own_private_state_is_allowed():
    source = (
        "class T:\n    def __init__(self):\n        self._buffer = []\n    def f(self):\n        return self._buffer\n"
    )
    assert own_private_names(ast.parse(source)) == {"_buffer"}


# What each part of `adadpo` may import (docs/architecture.md, "Imports go one way"); the entry points import anything.
ALLOWED_IMPORTS = {
    "user_numbers": set(),
    "files": set(),
    "run_folder": set(),
    "data_checks": set(),
    "demo": {"files"},
    "testing": set(),
    "evaluation": {"files"},
    "losses": {"user_numbers"},
    "upstream_options": set(),
    "config": {"losses", "upstream_options", "user_numbers"},
    "recipe": {"config", "files", "losses", "run_folder"},
    "data": {"data_checks"},
    "training": {"config", "data", "data_checks", "files", "losses", "run_folder"},
    "hub": {"files", "run_folder", "training"},
    "preflight": {"files", "losses", "training"},
    "sweep": {"files", "losses", "recipe", "run_folder", "user_numbers"},
    "plotting": {"losses", "recipe", "run_folder"},
}


def package_imports() -> dict[str, set[str]]:
    """Which top-level part of `adadpo` (a module or a package) each part imports."""
    root = REPO_ROOT / "src" / "adadpo"
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        unit = parts[0].removesuffix(".py")
        if unit == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                target = name.split(".")
                if target[0] == "adadpo" and len(target) > 1 and target[1] != unit:
                    graph.setdefault(unit, set()).add(target[1])
    return graph


def test_packages_import_one_way():
    graph = package_imports()
    assert set(graph) - {"cli"} <= set(ALLOWED_IMPORTS), "a new part of adadpo: add it to docs/architecture.md"
    wrong = {unit: sorted(targets - ALLOWED_IMPORTS[unit]) for unit, targets in graph.items() if unit != "cli"}
    assert {unit: targets for unit, targets in wrong.items() if targets} == {}


def test_run_folder_names_agree_with_transformers():
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    from adadpo.run_folder import CHECKPOINT_PREFIX, TRAINER_STATE

    assert (TRAINER_STATE, CHECKPOINT_PREFIX) == (TRAINER_STATE_NAME, PREFIX_CHECKPOINT_DIR)
