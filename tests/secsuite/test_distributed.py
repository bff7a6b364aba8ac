"""torchrun with 2 ranks on loopback (gloo) writes the same report as a single-process run."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from secsuite.audit import audit
from secsuite.distributed import World
from secsuite.report import Report
from secsuite.testing import comparable
from tests.secsuite.test_determinism import IGNORED, TINY_AUDIT, tiny_config


def test_batches_are_dealt_round_robin():
    batches = list(range(7))
    shares = [World(rank, 3).mine(batches) for rank in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert World().gather({1: "a"}) == {1: "a"} and World().broadcast("x") == "x"


def test_two_ranks_give_the_single_process_report(tmp_path):
    config_path, out = tmp_path / "audit.toml", tmp_path / "out"
    config_path.write_text(TINY_AUDIT)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "SECSUITE_PROGRESS": "0"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "secsuite", "audit", str(config_path), "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    # Rank 0 alone reports and writes; rank 1 stays silent.
    assert run.stdout.count("wrote ") == 1
    sharded = Report.from_json((out / "report.json").read_text())
    assert comparable(sharded, IGNORED) == comparable(audit(tiny_config(), write=False), IGNORED)
