"""Certified training raises verified accuracy far above normal training; the eps ramp and parameters behave."""

from __future__ import annotations

import pytest
import torch

from defenses import make_defense
from defenses.certified import certify
from defenses.certified.models import ibp_cnn
from defenses.certified.schedule import smoothed_eps
from defenses.certified.training import CertifiedTraining
from secsuite.model import Classifier
from secsuite.threat import ThreatModel
from secsuite.training import train_classifier

EPS = 0.05


def fresh() -> Classifier:
    torch.manual_seed(0)
    return Classifier(ibp_cnn(10, (1, 8, 8)), 10, (1, 8, 8), name="ibp_cnn")


def test_ibp_training_certifies_what_normal_training_cannot(digits):
    x, y = digits.test.x, digits.test.y
    normal = fresh()
    train_classifier(normal, digits.train, epochs=15, lr=3e-3, seed=0)
    defense = CertifiedTraining(method="IBP", epochs=15, warmup_epochs=1, ramp_epochs=6, lr=3e-3, batch_size=64)
    result = defense.fit(fresh(), digits.train, ThreatModel(eps=[0.0, EPS]))
    normal_verified = certify(normal, x, y, EPS, "IBP").verified_acc
    trained_verified = certify(result.classifier, x, y, EPS, "IBP").verified_acc
    assert normal_verified < 0.2
    assert trained_verified > 0.6, f"IBP-trained verified accuracy {trained_verified:.3f}"
    assert result.classifier.accuracy(x, y) > 0.8
    assert result.details["train_eps"] == pytest.approx(1.1 * EPS)
    assert [row["epoch"] for row in result.log] == list(range(1, 16)) and result.log[-1]["eps"] == pytest.approx(1.1 * EPS)


def test_crown_ibp_training_runs_through_the_registry_and_leaves_the_input_model_alone(digits):
    original = fresh()
    before = [p.clone() for p in original.parameters()]
    defense = make_defense("certified_training", method="CROWN-IBP", epochs=2, warmup_epochs=0, ramp_epochs=2, batch_size=128)
    result = defense.fit(original, digits.train, ThreatModel(eps=[EPS]))
    assert all(torch.equal(a, b) for a, b in zip(before, original.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before, result.classifier.parameters()))
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.log)
    assert "CROWN-IBP certified training to linf eps 0.055" in result.details["markdown"]


def test_smoothed_ramp():
    values = [smoothed_eps(step, 10, 100, 0.11) for step in range(0, 130)]
    assert values[:11] == [0.0] * 11
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[110:] == [0.11] * 20
    # Slow polynomial start: a quarter into the ramp eps is far below a linear ramp's quarter.
    assert values[35] < 0.25 * 0.11 / 2
    # No jump where the polynomial hands over to the line.
    assert abs(values[36] - values[35]) < 2 * abs(values[35] - values[34]) + 1e-9


@pytest.mark.parametrize("kwargs, field", [
    ({"method": "CROWN"}, "method"), ({"eps": 0}, "eps"), ({"eps_scale": 0.9}, "eps_scale"), ({"epochs": 0}, "epochs"),
    ({"warmup_epochs": 5, "ramp_epochs": 30, "epochs": 30}, "ramp_epochs"), ({"lr": 0}, "lr"), ({"kappa_end": 2}, "kappa_end"),
])
def test_invalid_parameters_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CertifiedTraining(**kwargs)
