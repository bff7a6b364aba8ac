"""Every shipped example config is valid, and the embedded default's twin runs end to end through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from secsuite.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.toml"))


def test_examples_exist():
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_passes_validate(path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)  # example paths (data/mnist, python:tests...) are relative to the repository
    assert main(["validate", str(path.relative_to(REPO_ROOT))]) == 0
    assert ": OK" in capsys.readouterr().out


@pytest.mark.slow
def test_default_example_audits_end_to_end(tmp_path):
    result = subprocess.run([sys.executable, "-m", "secsuite", "audit", "examples/digits_default.toml", "--out", str(tmp_path)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert {p.name for p in tmp_path.iterdir()} >= {"report.json", "report.md", "report.html"}
    assert report["clean"]["clean_acc"] >= 0.95
    worst = [row["robust_acc"] for row in sorted(report["worst_case"], key=lambda row: row["eps"])]
    # Robust accuracy falls with the budget, from clean accuracy at eps 0 to (nearly) nothing at eps 0.3.
    assert worst[0] == pytest.approx(report["clean"]["clean_acc"])
    assert all(a >= b for a, b in zip(worst, worst[1:]))
    assert worst[-1] <= 0.05
