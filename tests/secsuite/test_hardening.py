"""Hostile or unlucky input: repeated attacks, non-finite numbers, broken data and models, and `validate` rejecting
exactly what `audit` would, each as one line on stderr, exit code 2, no traceback, nothing overwritten."""

from __future__ import annotations

import secsuite


def test_repeated_attack_gets_its_own_label_and_the_worst_case_is_below_every_entry(digits_model, digits_eval):
    x, y = digits_eval
    strong = {"name": "pgd", "steps": 20}
    weak = {"name": "pgd", "steps": 1, "random_start": False}
    report = secsuite.evaluate(digits_model, (x[:96], y[:96]), {"eps": [0.1, 0.2]}, attacks=[strong, weak])
    assert [a.name for a in report.attacks] == ["pgd", "pgd#2"]
    assert report.attacks[1].params == {"steps": 1, "random_start": False}
    strong_acc, weak_acc = ({r.eps: r.robust_acc for r in a.results} for a in report.attacks)
    for worst in report.worst_case:
        # The one-step entry is the weaker one; the worst case may not rise above the stronger.
        assert worst.robust_acc <= min(strong_acc[worst.eps], weak_acc[worst.eps]) + 1e-9
        assert set(worst.broken_by) == {"pgd", "pgd#2"}
        clean = report.clean.clean_acc * len(x[:96])
        assert sum(worst.broken_by.values()) == round(clean - worst.robust_acc * len(x[:96]))


def test_weaker_attack_check_names_the_repeated_entry(digits_model, digits_eval):
    x, y = digits_eval
    attacks = ["fgsm", {"name": "pgd", "steps": 10}, {"name": "pgd", "steps": 1, "step_size": 0.01}]
    report = secsuite.evaluate(digits_model, (x[:96], y[:96]), {"eps": [0.2]}, attacks=attacks)
    flagged = [w.message for w in report.warnings if w.code == "weaker_than_weaker_attack"]
    assert len(flagged) == 1 and flagged[0].startswith("pgd#2 leaves"), flagged
