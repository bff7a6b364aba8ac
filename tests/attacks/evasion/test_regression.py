"""The project's own attack regressions, written with the secsuite pytest plugin.

A change that weakens PGD/FGSM (robust accuracy goes up) or breaks the model (clean accuracy
goes down) shows up as a failed baseline row; refresh on purpose with --secsuite-update-baselines.
"""

from __future__ import annotations

import pytest

import secsuite
from secsuite.testing import RobustnessRegression, assert_robust

THREAT = {"norm": "linf", "eps": [0.05, 0.1, 0.2]}


def test_attack_strength_matches_baseline(digits_model, digits, secsuite_baseline):
    data = (digits.test.x[:192], digits.test.y[:192])
    report = secsuite.evaluate(digits_model, data, THREAT, attacks=["fgsm", {"name": "pgd", "steps": 10}])
    # Attack regressions are one-sided in the other direction too: an attack that got weaker leaves
    # *more* examples robust, so guard attack success rates (higher is better) as well.
    success = {f"{e.name}_success@{r.eps:g}": r.success_rate for e in report.attacks for r in e.results}
    # .secsuite/baselines.json is written by bench/regression_spread.py: the mean over training seeds 0-4 at 1 and 2
    # threads, each tolerance 1.5x the largest drop below that mean (at least 0.02); the per-run values are in
    # bench/results/regression_spread.json. The 0.04 default covers only a metric added without a measured spread.
    secsuite_baseline(report, name="digits_cnn_accuracy", tolerance={"default": 0.04})
    secsuite_baseline(success, name="digits_cnn_attack_success", tolerance={"default": 0.04})


def test_assert_robust_passes_and_fails_on_the_digits_model(digits_model, digits):
    data = (digits.test.x[:128], digits.test.y[:128])
    assert_robust(digits_model, data, {"eps": [0.02]}, attacks=["fgsm", "pgd"], min_robust_accuracy=0.8)
    with pytest.raises(RobustnessRegression, match="worst_case@0.2"):
        assert_robust(digits_model, data, {"eps": [0.2]}, attacks=["fgsm", "pgd"], min_robust_accuracy=0.5)
