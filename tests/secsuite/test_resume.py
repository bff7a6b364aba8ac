"""An audit killed with SIGKILL mid-run resumes with --resume, redoes only what was unfinished, and gives the same report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import torch

from secsuite.audit import audit
from secsuite.cli import main
from secsuite.report import Report
from secsuite.testing import comparable
from tests.secsuite.test_determinism import IGNORED, TINY_AUDIT, tiny_config

KILL_AFTER = 3  # of the 6 (attack, eps) evaluations
# The audit kills itself with SIGKILL right after its third evaluation checkpoint: no cleanup, no handler runs.
KILLED_RUN = f"""
import os, signal, sys
from secsuite import resume
from secsuite.cli import main

save, saved = resume.RunState.save_evaluation, []
def save_then_die(self, key, outcome):
    save(self, key, outcome)
    saved.append(key)
    if len(saved) == {KILL_AFTER}:
        os.kill(os.getpid(), signal.SIGKILL)
resume.RunState.save_evaluation = save_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_killed_audit_resumes_to_the_uninterrupted_report(tmp_path):
    config_path, out = tmp_path / "audit.toml", tmp_path / "out"
    config_path.write_text(TINY_AUDIT)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "SECSUITE_PROGRESS": "0"}
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, "audit", str(config_path), "--out", str(out)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    state = out / ".state" / tiny_config().config_hash()
    finished = sorted((state / "evaluations").glob("*.pt"))
    assert len(finished) == KILL_AFTER and (state / "model.pt").is_file() and not (out / "report.json").exists()
    before = {path: path.stat().st_mtime_ns for path in [state / "model.pt", *finished]}

    assert main(["audit", str(config_path), "--out", str(out), "--resume"]) == 0

    # Only the unfinished evaluations were computed: the model and finished checkpoints were not rewritten.
    assert {path: path.stat().st_mtime_ns for path in before} == before
    assert len(list((state / "evaluations").glob("*.pt"))) == 6
    resumed = Report.from_json((out / "report.json").read_text())
    assert comparable(resumed, IGNORED) == comparable(audit(tiny_config(), write=False), IGNORED)


def test_resume_without_state_runs_everything(tmp_path):
    report = audit(tiny_config(), out_dir=tmp_path, resume=True)
    assert (tmp_path / "report.json").is_file() and len(list(tmp_path.glob(".state/*/evaluations/*.pt"))) == 6
    assert comparable(report, IGNORED) == comparable(audit(tiny_config(), write=False), IGNORED)


def test_finished_defense_is_restored_not_refit(tmp_path, monkeypatch):
    config = tiny_config()
    config.defend = [{"name": "distillation", "epochs": 1}]
    first = audit(config, out_dir=tmp_path)

    def refit(*_):
        raise AssertionError("a finished defense was fitted again")

    monkeypatch.setattr("secsuite.audit.run_defense", refit)
    resumed = audit(config, out_dir=tmp_path, resume=True)
    assert resumed.defenses and comparable(resumed, IGNORED) == comparable(first, IGNORED)
