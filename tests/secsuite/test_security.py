"""Hostile or unlucky input through the real `secsuite` command (docs/security.md).

Every refusal is checked the same way: exit code 2, one line on stderr that names the problem, no
traceback, and the report an earlier run left in the output folder is byte-identical afterwards.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import pytest
import torch
from torch import nn

from secsuite.cli import main
from secsuite.files import SET_LINK, replace_file_set
from secsuite.report import Report, write_report
from secsuite.sources import load_classifier
from secsuite.testing import comparable
from tests.secsuite.test_determinism import IGNORED

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
# The same thread count as this process, so that a subprocess computes exactly what an in-process run does.
ENV = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "SECSUITE_PROGRESS": "0"}


def secsuite_command(*args: str, cwd: Path, prefix: tuple[str, ...] = (), **run) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "secsuite", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
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



def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (links as their targets' names), to compare a folder before and after."""
    return {str(path.relative_to(folder)): os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_symlink() or path.is_file()}


def read_only(folder: Path) -> tuple[str, ...]:
    """Command prefix: run with `folder` bind-mounted read-only in a private mount namespace (root cannot write there either)."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "--map-root-user", "--mount", "true"], capture_output=True).returncode:
        pytest.skip("a read-only folder needs `unshare --map-root-user --mount` (user namespaces), not available here")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return ("unshare", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(folder))


UNWRITABLE = {  # case: (target under the earlier run's folder, command prefix, problem named)
    "a file": (lambda out: out / "report.json", lambda out: (), "is a file"),
    "under a file": (lambda out: out / "report.json" / "sub", lambda out: (), "is under a file"),
    "read-only": (lambda out: out / "sub", read_only, "Read-only file system"),
    "under /proc": (lambda out: Path("/proc/secsuite-out"), lambda out: (), "cannot be created or written"),
}


@pytest.mark.parametrize("case", sorted(UNWRITABLE))
def test_unwritable_out_fails_before_any_work(case, out, tmp_path):
    target, prefix, problem = UNWRITABLE[case]
    (tmp_path / "audit.toml").write_text(TINY_AUDIT)
    before = tree_bytes(out)
    done = secsuite_command("audit", "audit.toml", "--out", str(target(out)), cwd=tmp_path, prefix=prefix(out))
    assert_refused(done, f"output folder {target(out)}", problem)
    assert tree_bytes(out) == before


@pytest.mark.parametrize("case", sorted(UNWRITABLE))
def test_unwritable_report_output_is_one_line(case, out, tmp_path):
    target, prefix, problem = UNWRITABLE[case]
    before = tree_bytes(out)
    done = secsuite_command("report", str(out / "report.json"), "-o", str(target(out) / "r.md"), cwd=tmp_path, prefix=prefix(out))
    assert_refused(done, f"output folder {target(out)}", problem)
    assert tree_bytes(out) == before


def test_report_output_that_is_a_folder_is_one_line(out, tmp_path):
    before = tree_bytes(out)
    assert_refused(secsuite_command("report", str(out / "report.json"), "-o", str(out), cwd=tmp_path), f"-o {out} is a folder")
    assert tree_bytes(out) == before


def file_size_limit(limit: int):
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG ("File too large"), as on a full disk.
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def assert_nothing_old_lost(before: dict[str, bytes], out: Path) -> None:
    """Every file the earlier run left is unchanged and no temp file or half-written report set is left."""
    after = tree_bytes(out)
    assert {name: after.get(name) for name in before} == before
    assert not [name for name in after if name.endswith(".tmp")]
    assert len(list(out.glob(".report-*"))) == 1


def test_full_disk_while_saving_the_trained_model(out, tmp_path):
    # Another seed replaces every result; the trained model (about 215 KB) is the first file over 100 KB.
    (tmp_path / "audit.toml").write_text(TINY_AUDIT.replace("eps = [0.1]", "eps = [0.1]\nseed = 1"))
    before = tree_bytes(out)
    done = secsuite_command("audit", "audit.toml", "--out", str(out), cwd=tmp_path, preexec_fn=file_size_limit(100_000))
    assert_refused(done, "model.pt", "File too large")
    assert_nothing_old_lost(before, out)


def test_full_disk_while_writing_the_report_set(out, tmp_path):
    # Given weights, nothing is trained; json (2 KB) and md (1 KB) fit under 16 KB, the html (about 30 KB) does not.
    weights = next(out.glob(".state/*/model.pt"))
    (tmp_path / "audit.toml").write_text(TINY_AUDIT.replace("[model]", f"[model]\nweights = {str(weights)!r}"))
    before = tree_bytes(out)
    done = secsuite_command("audit", "audit.toml", "--out", str(out), cwd=tmp_path, preexec_fn=file_size_limit(16_000))
    assert_refused(done, "report.html", "File too large")
    assert_nothing_old_lost(before, out)


# Runs the CLI and SIGKILLs itself right after the first file of the new report set is on disk.
KILLED_INSIDE_REPORT_SET = """
import os, signal, sys
from secsuite import files
from secsuite.cli import main

write = files.write_atomic
def write_then_die(path, content):
    write(path, content)
    if path.parent.name.startswith(files.SET_PREFIX):
        os.kill(os.getpid(), signal.SIGKILL)
files.write_atomic = write_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_kill_while_writing_the_report_set_leaves_the_old_set(out, tmp_path):
    (tmp_path / "audit.toml").write_text(TINY_AUDIT.replace("eps = [0.1]", "eps = [0.1]\nseed = 1"))
    before = report_bytes(out)
    killed = subprocess.run([sys.executable, "-c", KILLED_INSIDE_REPORT_SET, "audit", "audit.toml", "--out", str(out)],
                            cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert report_bytes(out) == before

    assert main(["audit", str(tmp_path / "audit.toml"), "--out", str(out), "--resume"]) == 0
    after = report_bytes(out)
    assert json.loads(after["report.json"])["meta"]["seed"] == 1
    assert b"seed 1." in after["report.md"] and b"seed 1." in after["report.html"]


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_report_files_follow_the_umask(mask, earlier_run, tmp_path):
    report = Report.from_json((earlier_run / "report.json").read_text())
    previous = os.umask(mask)
    try:
        write_report(report, tmp_path / "out")
    finally:
        os.umask(previous)
    assert {name: stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) for name in REPORT_FILES} == dict.fromkeys(REPORT_FILES, 0o666 & ~mask)
    assert stat.S_IMODE((tmp_path / "out" / SET_LINK).stat().st_mode) == 0o777 & ~mask


def test_report_set_replaces_plain_files_and_dropped_formats(tmp_path):
    for name in ("report.json", "report.html"):  # as an older secsuite left them
        (tmp_path / name).write_text(f"old {name}")
    replace_file_set(tmp_path, {"report.json": "A json", "report.html": "A html"})
    assert {name: (tmp_path / name).read_text() for name in ("report.json", "report.html")} == {"report.json": "A json", "report.html": "A html"}
    first = (tmp_path / SET_LINK).resolve()

    replace_file_set(tmp_path, {"report.json": "B json"})
    assert (tmp_path / "report.json").read_text() == "B json" and not os.path.lexists(tmp_path / "report.html")
    # The set just replaced stays for a reader that resolved the link before the swap; older ones go.
    assert sorted(tmp_path.glob(".report-*")) == sorted([first, (tmp_path / SET_LINK).resolve()])
    assert (first / "report.html").read_text() == "A html"


def test_resume_after_the_weights_file_changed_is_refused(out, tmp_path):
    weights = tmp_path / "w.pt"
    shutil.copy(next(out.glob(".state/*/model.pt")), weights)
    (tmp_path / "audit.toml").write_text(TINY_AUDIT.replace("[model]", f"[model]\nweights = {str(weights)!r}"))
    assert main(["audit", str(tmp_path / "audit.toml"), "--out", str(out)]) == 0
    before = tree_bytes(out)
    # Other weights at the same path: resuming would pair their clean pass with the old weights' attacks.
    torch.save({name: -tensor for name, tensor in torch.load(weights, weights_only=True).items()}, weights)
    assert_refused(secsuite_command("audit", "audit.toml", "--out", str(out), "--resume", cwd=tmp_path),
                   f"weights file {weights} (sha256", "run without --resume")
    assert tree_bytes(out) == before


def test_corrupt_state_on_resume_is_recomputed(tmp_path):
    # Its own run right before resuming: the fingerprint includes the git revision, and a commit in between would (rightly) refuse.
    (tmp_path / "audit.toml").write_text(TINY_AUDIT)
    out = tmp_path / "out"
    assert main(["audit", str(tmp_path / "audit.toml"), "--out", str(out)]) == 0
    earlier = comparable((out / "report.json").read_text(), IGNORED)
    state = next(out.glob(".state/*"))
    model, evaluation = state / "model.pt", next(state.glob("evaluations/*.pt"))
    model.write_bytes(model.read_bytes()[:1000])
    evaluation.write_bytes(b"not a checkpoint")
    done = secsuite_command("audit", "audit.toml", "--out", str(out), "--resume", cwd=tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert comparable((out / "report.json").read_text(), IGNORED) == earlier
    assert torch.load(model, weights_only=True).keys() and torch.load(evaluation, weights_only=True)


def test_unreadable_fingerprint_on_resume_is_refused(out, tmp_path):
    marker = next(out.glob(".state/*/fingerprint.json"))
    marker.write_text(marker.read_text()[:20])
    before = tree_bytes(out)
    (tmp_path / "audit.toml").write_text(TINY_AUDIT)
    assert_refused(secsuite_command("audit", "audit.toml", "--out", str(out), "--resume", cwd=tmp_path),
                   "fingerprint.json is missing or unreadable", "run without --resume")
    assert tree_bytes(out) == before


def test_rendering_a_report_file_embeds_no_html_from_it(earlier_run, tmp_path):
    hostile = json.loads((earlier_run / "report.json").read_text())
    hostile["model"]["source"] = "<script>alert('source')</script>"
    hostile["defenses"] = [{"name": "<script>alert('name')</script>", "clean_acc": 0.5, "clean_acc_delta": 0.0, "training_time_s": 1.0,
                            "attacks": hostile["attacks"], "worst_case": hostile["worst_case"], "worst_case_delta": [],
                            "details": {"html": "<script>alert('details')</script>", "markdown": "<b>table</b>"}}]
    (tmp_path / "hostile.json").write_text(json.dumps(hostile))
    done = secsuite_command("report", "hostile.json", "--format", "html", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "<script" not in done.stdout and "&lt;b&gt;table&lt;/b&gt;" in done.stdout
