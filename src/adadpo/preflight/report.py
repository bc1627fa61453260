"""The preflight table: one row per check, PASS / WARN / FAIL, the measured value, and for each non-PASS the recipe
key or action that fixes it."""

import math
from dataclasses import asdict, dataclass, field

from adadpo.files import write_json_atomic


PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
_ORDER = {PASS: 0, WARN: 1, FAIL: 2}


@dataclass
class Check:
    group: str  # "1 tokens", "2 identity", ... (the numbered checks of docs/preflight.md)
    name: str
    status: str
    value: str
    fix: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, group: str, name: str, status: str, value, fix: str = "") -> Check:
        if status not in _ORDER:
            raise ValueError(f"status must be PASS, WARN or FAIL, got {status!r}")
        check = Check(group, name, status, str(value), fix if status != PASS else "")
        self.checks.append(check)
        return check

    def status(self) -> str:
        return max((c.status for c in self.checks), key=_ORDER.__getitem__, default=PASS)

    def exit_code(self) -> int:
        return 1 if self.status() == FAIL else 0

    def table(self) -> str:
        rows = [("check", "status", "value", "fix")] + [
            (f"{c.group} / {c.name}", c.status, c.value, c.fix) for c in self.checks
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = []
        for i, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
            if i == 0:
                lines.append("-" * (sum(widths) + 6 + len("fix")))
        counts = {s: sum(c.status == s for c in self.checks) for s in _ORDER}
        lines.append(f"preflight: {self.status()} ({counts[PASS]} pass, {counts[WARN]} warn, {counts[FAIL]} fail)")
        return "\n".join(line.rstrip() for line in lines)

    def to_json(self) -> dict:
        return {"status": self.status(), "checks": [asdict(c) for c in self.checks]}


def fmt(value: float, digits: int = 4) -> str:
    """Short numbers for the table: 0.6931, 1.2e-06, 123456."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.{digits}g}"
    return f"{value:.2e}"


def write_json(path: str, report: Report, extra: dict | None = None) -> None:
    write_json_atomic(path, {**report.to_json(), **(extra or {})})
