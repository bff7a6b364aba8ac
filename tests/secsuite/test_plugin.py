"""The robustness regression helpers and the pytest plugin: pass on a good model, fail with the table on a weaker one."""

from __future__ import annotations

import json

import pytest
import torch

from secsuite.model import Classifier
from secsuite.testing import Baselines, RobustnessRegression, assert_robust, compare, format_table, metrics
from secsuite.training import train_classifier
from secsuite.zoo import build

pytest_plugins = ["pytester"]

THREAT = {"eps": [0.05, 0.1]}
ATTACKS = ["fgsm", {"name": "pgd", "steps": 3}]
FLOORS = {0.05: 0.8, 0.1: 0.5}  # the 30-epoch digits CNN reaches about 0.90 / 0.65 on these 128 digits


@pytest.fixture(scope="module")
def weak_model(digits) -> Classifier:
    """The same architecture after one epoch: clean about 0.73, robust about 0.56 / 0.45."""
    torch.manual_seed(0)
    classifier = Classifier(build("small_cnn", 10, digits.train.input_shape), 10, digits.train.input_shape, name="weak_cnn")
    train_classifier(classifier, digits.train, epochs=1, seed=0)
    return classifier.eval()


def test_assert_robust_passes_on_the_good_model(digits_model, digits_eval):
    report = assert_robust(digits_model, digits_eval, THREAT, attacks=ATTACKS, min_robust_accuracy=FLOORS)
    assert report.worst_case[0].robust_acc >= FLOORS[0.05]


def test_assert_robust_fails_with_a_table_on_a_weaker_model(weak_model, digits_eval):
    with pytest.raises(RobustnessRegression) as failure:
        assert_robust(weak_model, digits_eval, THREAT, attacks=ATTACKS, min_robust_accuracy=FLOORS)
    lines = str(failure.value).splitlines()
    assert lines[1].split() == ["metric", "required", "now", "delta"]
    row = next(line.split() for line in lines if line.startswith("worst_case@0.05"))
    assert row[1] == "0.8000" and float(row[2]) < 0.8 and float(row[3]) == pytest.approx(float(row[2]) - 0.8, abs=1e-4) and row[4] == "FAIL"


def test_assert_robust_rejects_an_eps_outside_the_grid(digits_model, digits_eval):
    with pytest.raises(ValueError, match="not in the threat's eps grid"):
        assert_robust(digits_model, digits_eval, THREAT, attacks=["fgsm"], min_robust_accuracy={0.3: 0.1})


def test_per_metric_tolerance_by_metric_then_family_then_default():
    baseline = {"clean_acc": 0.95, "pgd@0.1": 0.60, "fgsm@0.1": 0.70}
    now = {"clean_acc": 0.94, "pgd@0.1": 0.56, "fgsm@0.1": 0.66}
    failed = lambda tolerance: [r.metric for r in compare(now, baseline, tolerance) if r.failed]  # noqa: E731
    assert failed(0.02) == ["pgd@0.1", "fgsm@0.1"]
    assert failed({"pgd": 0.05}) == ["fgsm@0.1"]
    assert failed({"pgd": 0.05, "fgsm@0.1": 0.05}) == []
    assert failed({"default": 0.005, "pgd": 0.05, "fgsm": 0.05}) == ["clean_acc"]
    assert "missing" in format_table(compare({}, {"clean_acc": 0.9}))


def test_baselines_update_writes_the_file_and_keeps_hand_written_tolerances(tmp_path, digits_model, weak_model, digits_eval):
    import secsuite

    path = tmp_path / ".secsuite" / "baselines.json"
    good = secsuite.evaluate(digits_model, digits_eval, THREAT, attacks=ATTACKS)
    Baselines(path, update=True).check("digits", good)
    stored = json.loads(path.read_text())
    assert stored["digits"]["metrics"] == metrics(good)
    Baselines(path).check("digits", good)

    stored["digits"]["tolerance"] = {"default": 1.0}
    path.write_text(json.dumps(stored))
    weak = secsuite.evaluate(weak_model, digits_eval, THREAT, attacks=ATTACKS)
    Baselines(path).check("digits", weak)  # a tolerance of 1 accepts anything
    Baselines(path, update=True).check("digits", weak)
    assert json.loads(path.read_text())["digits"] == {"metrics": metrics(weak), "tolerance": {"default": 1.0}}
    with pytest.raises(RobustnessRegression, match="no baseline 'other'"):
        Baselines(path).check("other", weak)


INNER_TEST = """
import os

import torch

import secsuite
from secsuite.data import load_dataset
from secsuite.model import Classifier
from secsuite.zoo import build


def test_digits_robustness(secsuite_baseline):
    data = load_dataset("digits").test.subset(128)
    net = build("small_cnn", 10, (1, 8, 8))
    net.load_state_dict(torch.load(os.environ["SECSUITE_TEST_WEIGHTS"], weights_only=True))
    report = secsuite.evaluate(Classifier(net, 10, (1, 8, 8)), data, {THREAT!r}, attacks={ATTACKS!r})
    secsuite_baseline(report, tolerance={{"default": 0.02, "pgd": 0.03}})
"""


def test_plugin_fixture_records_passes_and_fails_with_the_table(pytester, monkeypatch, digits_model, weak_model):
    pytester.makepyfile(test_inner=INNER_TEST.format(THREAT=THREAT, ATTACKS=ATTACKS))
    good, weak = pytester.path / "good.pt", pytester.path / "weak.pt"
    torch.save(digits_model.net.state_dict(), good)
    torch.save(weak_model.net.state_dict(), weak)
    baseline_file = pytester.path / ".secsuite" / "baselines.json"

    monkeypatch.setenv("SECSUITE_TEST_WEIGHTS", str(good))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no baseline 'test_inner.py::test_digits_robustness'*--secsuite-update-baselines*"])

    result = pytester.runpytest("-p", "no:cacheprovider", "--secsuite-update-baselines")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["secsuite: updated 1 baseline(s) in *baselines.json"])
    assert set(json.loads(baseline_file.read_text())["test_inner.py::test_digits_robustness"]["metrics"]) >= {"clean_acc", "worst_case@0.05"}

    assert pytester.runpytest("-p", "no:cacheprovider").ret == 0

    monkeypatch.setenv("SECSUITE_TEST_WEIGHTS", str(weak))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*robustness regression against baseline 'test_inner.py::test_digits_robustness'*",
        "metric*baseline*now*delta",
        "clean_acc*0.9*0.7*-0.2*FAIL (tolerance 0.02)",
        "pgd@0.1*FAIL (tolerance 0.03)",
    ])
