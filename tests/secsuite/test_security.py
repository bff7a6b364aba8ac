"""Hostile or unlucky input through the real `secsuite` command (docs/security.md).

Every refusal is checked the same way: exit code 2, one line on stderr that names the problem, no
traceback, and the report an earlier run left in the output folder is byte-identical afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import pytest
import torch
from torch import nn

from secsuite.cli import main
from secsuite.errors import ModelError
from secsuite.sources import load_classifier

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_AUDIT = """
[model]
train_epochs = 1
[data]
limit = 16
batch_size = 16
[threat]
eps = [0.1]
[[evaluate]]
name = "fgsm"
"""
REPORT_FILES = ("report.json", "report.md", "report.html")


def secsuite_command(*args: str, cwd: Path, **run) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SECSUITE_PROGRESS": "0", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "secsuite", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, **run)


def assert_refused(done: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2 and one line on stderr containing every fragment; no traceback."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def report_bytes(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in REPORT_FILES}


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> Path:
    """An output folder holding a finished audit (report set and resume state) of TINY_AUDIT."""
    folder = tmp_path_factory.mktemp("earlier")
    (folder / "audit.toml").write_text(TINY_AUDIT)
    assert main(["audit", str(folder / "audit.toml"), "--out", str(folder / "out")]) == 0
    return folder / "out"


@pytest.fixture
def out(earlier_run, tmp_path) -> Path:
    """A private copy of the earlier run's output folder."""
    return Path(shutil.copytree(earlier_run, tmp_path / "out", symlinks=True))


class FileWritingModule(nn.Module):
    """A TorchScript model whose `__setstate__`, run by torch.jit.load, creates a file of the saver's choosing."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.target = state[0]
        # Mapping the file shared creates it; the result feeds a field so that the call is not optimised away.
        self.training = bool(torch.from_file(self.target, shared=True, size=1).numel() == 0) and state[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10]


def test_torchscript_is_code_and_needs_trust_code(out, tmp_path):
    planted = tmp_path / "planted"
    torch.jit.script(FileWritingModule(str(planted))).save(str(tmp_path / "model.pt"))
    (tmp_path / "audit.toml").write_text(TINY_AUDIT.replace("[model]", '[model]\nsource = "torchscript:model.pt"'))
    before = report_bytes(out)

    assert_refused(secsuite_command("audit", "audit.toml", "--out", str(out), cwd=tmp_path), "model.trust_code")
    assert_refused(secsuite_command("validate", "audit.toml", cwd=tmp_path), "model.trust_code")
    assert not planted.exists() and report_bytes(out) == before

    # The archive really does write at load: a user who vouches for it gets exactly that.
    assert load_classifier(f"torchscript:{tmp_path / 'model.pt'}", 10, (1, 8, 8), trust_code=True)
    assert planted.exists()

