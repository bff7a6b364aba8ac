"""Robustness as test assertions: `assert_robust`, report metrics, stored baselines and the failure table.

    from secsuite.testing import assert_robust
    assert_robust(model, (x, y), {"eps": [0.03]}, attacks=["fgsm", "pgd"], min_robust_accuracy=0.6)

The pytest plugin (secsuite.pytest_plugin) wraps `Baselines` in the `secsuite_baseline` fixture.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secsuite.files import write_atomic
from secsuite.report import Report

# Fields that legitimately differ between two runs of the same config and seed.
TIMING_FIELDS = frozenset({"wall_time_s", "section_time_s", "time_s", "training_time_s", "started_at"})
DEFAULT_TOLERANCE = 0.02


class RobustnessRegression(AssertionError):
    """A robustness metric fell below its required or baseline value; the message is the table."""


def comparable(report: Report | Mapping | str, ignore: Iterable[str] = TIMING_FIELDS) -> Any:
    """The report as plain JSON data without the `ignore` fields (at any depth): equal for reproducible runs."""
    if isinstance(report, Report):
        data: Any = json.loads(report.to_json())
    elif isinstance(report, str):
        data = json.loads(report)
    else:
        data = report
    ignore = frozenset(ignore)

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: strip(value) for key, value in node.items() if key not in ignore}
        if isinstance(node, list):
            return [strip(value) for value in node]
        return node

    return strip(data)


def metrics(report: Report) -> dict[str, float]:
    """The accuracies a regression test guards (higher is better): clean, worst case and each attack per eps."""
    found = {"clean_acc": report.clean.clean_acc}
    found.update({f"worst_case@{w.eps:g}": w.robust_acc for w in report.worst_case})
    for entry in report.attacks:
        found.update({f"{entry.name}@{r.eps:g}": r.robust_acc for r in entry.results})
    return found


def tolerance_for(metric: str, tolerance: float | Mapping[str, float]) -> float:
    """A number, or a mapping looked up by exact metric ("pgd@0.1"), then its family ("pgd"), then "default"."""
    if not isinstance(tolerance, Mapping):
        return float(tolerance)
    for key in (metric, metric.partition("@")[0], "default"):
        if key in tolerance:
            return float(tolerance[key])
    return DEFAULT_TOLERANCE


@dataclass
class Row:
    metric: str
    reference: float
    now: float | None
    tolerance: float

    @property
    def delta(self) -> float | None:
        return None if self.now is None else self.now - self.reference

    @property
    def failed(self) -> bool:
        return self.now is None or self.now < self.reference - self.tolerance - 1e-12


def compare(now: Mapping[str, float], reference: Mapping[str, float], tolerance: float | Mapping[str, float] = DEFAULT_TOLERANCE) -> list[Row]:
    """One row per reference metric; a row fails when the metric is missing or dropped by more than its tolerance."""
    return [Row(metric, value, now.get(metric), tolerance_for(metric, tolerance)) for metric, value in reference.items()]


def format_table(rows: list[Row], reference: str = "baseline") -> str:
    header = ("metric", reference, "now", "delta", "")
    cells = [header] + [
        (row.metric, f"{row.reference:.4f}", "missing" if row.now is None else f"{row.now:.4f}",
         "" if row.delta is None else f"{row.delta:+.4f}", f"FAIL (tolerance {row.tolerance:g})" if row.failed else "ok")
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells)


def check_rows(rows: list[Row], title: str, reference: str = "baseline") -> None:
    failed = [row for row in rows if row.failed]
    if failed:
        raise RobustnessRegression(f"{title}: {len(failed)} of {len(rows)} metrics regressed\n{format_table(rows, reference)}")


def assert_robust(model, data, threat=None, attacks=("fgsm", "pgd"), min_robust_accuracy: float | Mapping[float, float] = 0.0,
                  batch_size: int = 256) -> Report:
    """Evaluate with `secsuite.evaluate` and require a worst-case robust accuracy at each eps > 0 of the threat.

    min_robust_accuracy: one floor for every eps, or {eps: floor} for chosen eps of the grid.
    Returns the report; raises RobustnessRegression with the table when a floor is not met.
    """
    import secsuite

    report = secsuite.evaluate(model, data, threat, attacks=attacks, batch_size=batch_size)
    achieved = {w.eps: w.robust_acc for w in report.worst_case}
    if isinstance(min_robust_accuracy, Mapping):
        unknown = sorted(set(min_robust_accuracy) - set(achieved))
        if unknown:
            raise ValueError(f"min_robust_accuracy names eps {unknown} that are not in the threat's eps grid {sorted(achieved)}")
        floors = dict(min_robust_accuracy)
    else:
        floors = {eps: float(min_robust_accuracy) for eps in achieved if eps > 0}
    rows = [Row(f"worst_case@{eps:g}", floor, achieved[eps], 0.0) for eps, floor in sorted(floors.items())]
    check_rows(rows, "robust accuracy below the required minimum", reference="required")
    return report


class Baselines:
    """Named metric sets in a JSON file (`.secsuite/baselines.json`): {name: {"metrics": {...}, "tolerance": {...}}}.

    A hand-written "tolerance" mapping in an entry overrides the caller's per metric and survives updates.
    """

    def __init__(self, path: str | Path, update: bool = False):
        self.path = Path(path)
        self.update = update
        self.updated: list[str] = []

    def read(self) -> dict[str, Any]:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def check(self, name: str, report: Report | Mapping[str, float], tolerance: float | Mapping[str, float] = DEFAULT_TOLERANCE) -> list[Row]:
        now = metrics(report) if isinstance(report, Report) else dict(report)
        stored = self.read()
        if self.update:
            entry = {**stored.get(name, {}), "metrics": now}
            write_atomic(self.path, json.dumps({**stored, name: entry}, indent=2, sort_keys=True) + "\n")
            self.updated.append(name)
            return []
        if name not in stored:
            raise RobustnessRegression(f"no baseline {name!r} in {self.path}; record it with pytest --secsuite-update-baselines")
        entry = stored[name]
        if isinstance(tolerance, Mapping):
            tolerance = {**tolerance, **entry.get("tolerance", {})}
        elif "tolerance" in entry:
            tolerance = {"default": float(tolerance), **entry["tolerance"]}
        rows = compare(now, entry["metrics"], tolerance)
        check_rows(rows, f"robustness regression against baseline {name!r} ({self.path})")
        return rows
