"""The report (schema, renderers, warnings) and the CLI contract: one-line errors, exit code 2, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch

import secsuite
from secsuite.cli import main
from secsuite.files import write_atomic
from secsuite.report import json_schema, to_html, to_markdown

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = """
[model]
train_epochs = 15
[data]
limit = 64
[threat]
eps = [0.0, 0.1, 0.2]
[[evaluate]]
name = "fgsm"
[[evaluate]]
name = "pgd"
steps = 5
[[evaluate]]
name = "cw"
binary_search_steps = 3
max_iterations = 30
"""


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit")
    (folder / "audit.toml").write_text(TINY)
    assert main(["audit", str(folder / "audit.toml"), "--out", str(folder / "out")]) == 0
    return folder / "out"


def test_audit_writes_three_reports_that_validate(tiny_report):
    report = json.loads((tiny_report / "report.json").read_text())
    jsonschema.validate(report, json_schema())
    assert report["clean"]["clean_acc"] > 0.9
    names = [a["name"] for a in report["attacks"]]
    assert names == ["fgsm", "pgd", "cw"]
    worst = {w["eps"]: w["robust_acc"] for w in report["worst_case"]}
    per_attack = [{r["eps"]: r["robust_acc"] for r in a["results"]} for a in report["attacks"] if a["in_worst_case"]]
    for eps, value in worst.items():
        assert value <= min(p[eps] for p in per_attack) + 1e-9
    assert worst[0.2] < worst[0.0]
    assert "certified" not in report or report["certified"] is None
    html = (tiny_report / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html
    markdown = (tiny_report / "report.md").read_text()
    assert "## Robust accuracy" in markdown and "## Defenses" not in markdown


def test_exported_schema_is_current():
    exported = json.loads((REPO_ROOT / "docs" / "report.schema.json").read_text())
    assert exported == json_schema(), "run `make schema` to refresh docs/report.schema.json"


def test_report_command_renders(tiny_report, capsys, tmp_path):
    assert main(["report", str(tiny_report / "report.json"), "--format", "md"]) == 0
    assert "# secsuite robustness report" in capsys.readouterr().out
    assert main(["report", str(tiny_report / "report.json"), "--format", "html", "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


BAD_CONFIGS = {
    "unknown field": ("[threat]\nepsilon = 0.1\n", "threat.epsilon: unknown field"),
    "negative eps": ("[threat]\neps = [-0.1]\n", "threat.eps: must be >= 0"),
    "unknown attack": ('[[evaluate]]\nname = "pgdd"\n', "unknown attack 'pgdd'"),
    "unknown model": ('[model]\nsource = "zoo:resnet99"\n', "unknown zoo model"),
    "missing data": ('[data]\nsource = "mnist:/no/such/dir"\n', "data directory not found"),
    "wrong shape": ("[model]\ninput_shape = [1, 28, 28]\n", "expects (N, 1, 28, 28)"),
    "labels out of range": ("[model]\nnum_classes = 5\n", "labels must be in [0, 5)"),
    "unsafe checkpoint": ('[model]\nweights = "evil.pt"\n', "refused"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.save({"w": Exploit()}, tmp_path / "evil.pt")
    text, message = BAD_CONFIGS[case]
    (tmp_path / "c.toml").write_text(text + "[output]\ndir = 'out'\n")
    assert main(["audit", "c.toml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out" / "report.json").exists()
    assert not (tmp_path / "pwned").exists()


def test_cli_subprocess_exit_code_and_no_traceback(tmp_path):
    (tmp_path / "c.toml").write_text("[threat]\nnorm = 'l3'\n")
    done = subprocess.run([sys.executable, "-m", "secsuite", "validate", str(tmp_path / "c.toml")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "threat.norm" in done.stderr


def test_nan_inputs_rejected_by_evaluate(digits_model):
    from secsuite.errors import DataError

    x = torch.rand(4, 1, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        secsuite.evaluate(digits_model, (x, torch.zeros(4, dtype=torch.long)), attacks=["fgsm"])


def test_write_atomic_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "report.json"
    write_atomic(target, "old")

    with pytest.raises(TypeError):
        write_atomic(target, 123)  # type: ignore[arg-type]
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_validity_warnings(digits_model, digits):
    data = (digits.test.x[:96], digits.test.y[:96])
    softmaxed = torch.nn.Sequential(digits_model, torch.nn.Softmax(dim=1))
    report = secsuite.evaluate(softmaxed, data, {"eps": [0.1]}, attacks=["fgsm"])
    assert "probability_outputs" in {w.code for w in report.warnings}
    # Logits scaled by 1e4 saturate softmax: the input gradients vanish (gradient masking).
    masked = secsuite.evaluate(torch.nn.Sequential(digits_model, Scale(1e4)), data, {"eps": [0.1]}, attacks=["fgsm"])
    assert "zero_gradients" in {w.code for w in masked.warnings}
    clean = secsuite.evaluate(digits_model, data, {"eps": [0.05, 0.1]}, attacks=["fgsm", {"name": "pgd", "steps": 10}])
    assert not clean.warnings
    # One PGD step from a random start is weaker than FGSM at the same eps: flagged.
    weak = secsuite.evaluate(digits_model, data, {"eps": [0.2]}, attacks=["fgsm", {"name": "pgd", "steps": 1, "step_size": 0.01}])
    assert "weaker_than_weaker_attack" in {w.code for w in weak.warnings}
    md, html = to_markdown(weak), to_html(weak)
    assert "weaker_than_weaker_attack" in md and "weaker_than_weaker_attack" in html


class Scale(torch.nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor
