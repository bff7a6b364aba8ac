"""An audit killed with SIGKILL mid-run resumes with --resume, redoes only what was unfinished, and gives the same report;
a state computed from other weights, data or code is never resumed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from secsuite.audit import audit
from secsuite.cli import main
from secsuite.data import DataSplits, Dataset
from secsuite.errors import ResumeError
from secsuite.report import Report
from secsuite.resume import RunState, fingerprint
from secsuite.testing import comparable
from secsuite.zoo import build
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


def test_fingerprint_follows_weights_data_and_code(tmp_path, digits):
    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(build("small_cnn", 10, (1, 8, 8)).state_dict(), weights)
    config = tiny_config()
    config.model.weights = str(weights)
    code = {"git_revision": "abc", "torch": "2.0"}
    base = fingerprint(config, digits, code)
    assert fingerprint(config, digits, code) == base

    changed_pixel = digits.test.x.clone()
    changed_pixel[7, 0, 0, 0] = 1 - changed_pixel[7, 0, 0, 0]  # a corner pixel: 0 in every digit
    other_data = DataSplits(digits.train, Dataset(changed_pixel, digits.test.y, digits.test.num_classes, digits.test.name))
    torch.manual_seed(1)
    torch.save(build("small_cnn", 10, (1, 8, 8)).state_dict(), tmp_path / "other.pt")
    other_weights = tiny_config()
    other_weights.model.weights = str(tmp_path / "other.pt")
    changes = {"data": fingerprint(config, other_data, code), "weights": fingerprint(other_weights, digits, code),
               "code": fingerprint(config, digits, {**code, "git_revision": "abd"})}
    for key, changed in changes.items():
        assert {k for k in base if base[k] != changed[k]} == {key}

    archive = tmp_path / "model.ts"
    archive.write_bytes(b"one archive")
    scripted = tiny_config()
    scripted.model.source, scripted.model.trust_code = f"torchscript:{archive}", True
    before = fingerprint(scripted, digits, code)
    archive.write_bytes(b"another archive")
    after = fingerprint(scripted, digits, code)
    assert {k for k in before if before[k] != after[k]} == {"source"}


def test_resume_refuses_a_state_from_other_inputs_and_a_fresh_run_starts_empty(tmp_path):
    config = tiny_config()
    computed = {"weights": None, "source": None, "data": "1" * 64, "code": {"git_revision": "r1", "torch": "2.0"}}
    RunState(tmp_path, config, computed, reuse=False).save_step("clean", {"acc": 0.5})

    for other, named in (({"data": "2" * 64}, "data digits (sha256 111111111111 -> 222222222222)"),
                         ({"code": {"git_revision": "r2", "torch": "2.0"}}, "code git_revision (r1 -> r2)")):
        with pytest.raises(ResumeError, match=re.escape(named)):
            RunState(tmp_path, config, {**computed, **other}, reuse=True)
    assert RunState(tmp_path, config, computed, reuse=True).load_step("clean") == {"acc": 0.5}

    RunState(tmp_path, config, computed, reuse=False)
    assert RunState(tmp_path, config, computed, reuse=True).load_step("clean") is None
