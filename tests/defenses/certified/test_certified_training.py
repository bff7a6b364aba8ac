"""Certified training raises verified accuracy far above normal training; the eps ramp and parameters behave."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from defenses import make_defense
from defenses.certified import Certifier, certify
from defenses.certified.certify import margin_spec
from defenses.certified.compat import lirpa
from defenses.certified.models import ibp_cnn
from defenses.certified.schedule import smoothed_eps
from defenses.certified.training import CertifiedTraining, robust_cross_entropy
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
    # Over init/shuffle seeds 0-2, 1 and 2 threads: normal 0.0 verified; IBP-trained 0.696-0.730 verified,
    # 0.875-0.914 clean accuracy.
    assert normal_verified < 0.1
    assert trained_verified > 0.6, f"IBP-trained verified accuracy {trained_verified:.3f}"
    assert result.classifier.accuracy(x, y) > 0.8
    eps_max = result.details["train_eps"]
    assert eps_max == pytest.approx(1.1 * EPS)
    # The eps of each epoch's last batch: 0 through the warm-up, a slow polynomial start (far below a linear
    # ramp's 1/6 at the end of epoch 2), rising through the 6 ramp epochs, then eps_max.
    logged = [row["eps"] for row in result.log]
    assert [row["epoch"] for row in result.log] == list(range(1, 16))
    assert logged[0] == 0 and 0 < logged[1] < eps_max / 6 / 4
    assert all(a < b < eps_max for a, b in zip(logged[1:6], logged[2:7]))
    assert logged[7:] == [pytest.approx(eps_max)] * 8


def test_crown_ibp_training_runs_through_the_registry_and_leaves_the_input_model_alone(digits):
    original = fresh()
    before = [p.clone() for p in original.parameters()]
    defense = make_defense("certified_training", method="CROWN-IBP", epochs=2, warmup_epochs=0, ramp_epochs=2, batch_size=128)
    result = defense.fit(original, digits.train, ThreatModel(eps=[EPS]))
    assert all(torch.equal(a, b) for a, b in zip(before, original.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before, result.classifier.parameters()))
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.log)
    assert "CROWN-IBP certified training to linf eps 0.055" in result.details["markdown"]


def robust_loss(certifier: Certifier, x, y, method: str, eps: float, eps_max: float, kappa: float = 0.0) -> float:
    """The training loss on one batch at kappa (the clean term's weight) held fixed."""
    training = CertifiedTraining(method=method, kappa_start=kappa, kappa_end=kappa)
    return training.loss(certifier, x, y, eps, eps_max, "linf")[0].item()


@pytest.fixture(scope="module")
def batch_at_init(digits):
    """A freshly initialised ibp_cnn, where certified training starts, and one training batch."""
    return Certifier(fresh()), digits.train.x[:64], digits.train.y[:64]


def test_crown_ibp_training_bound_is_tighter_than_ibp_and_moves_with_beta(batch_at_init):
    # CROWN-IBP (Zhang et al. 2020) trains on beta * CROWN-IBP bound + (1 - beta) * IBP bound with
    # beta = 1 - eps / eps_max: fixing eps and varying eps_max sets beta (kappa held at 0: robust term only).
    certifier, x, y = batch_at_init
    C = margin_spec(y, 10)
    ibp_bound, crown_ibp_bound = (certifier.bounds(x, EPS, method, "linf", C) for method in ("IBP", "CROWN-IBP"))
    ibp = robust_loss(certifier, x, y, "IBP", EPS, EPS)
    assert ibp == pytest.approx(robust_cross_entropy(ibp_bound).item(), rel=1e-5)
    assert robust_loss(certifier, x, y, "IBP", EPS, 2 * EPS) == pytest.approx(ibp, rel=1e-5)  # no beta in IBP training
    at_start = robust_loss(certifier, x, y, "CROWN-IBP", EPS, 1e6 * EPS)  # beta ~ 1
    halfway = robust_loss(certifier, x, y, "CROWN-IBP", EPS, 2 * EPS)  # beta = 0.5
    at_end = robust_loss(certifier, x, y, "CROWN-IBP", EPS, EPS)  # beta = 0: plain IBP once eps reaches eps_max
    assert at_start == pytest.approx(robust_cross_entropy(crown_ibp_bound).item(), rel=1e-4)
    assert halfway == pytest.approx(robust_cross_entropy(0.5 * crown_ibp_bound + 0.5 * ibp_bound).item(), rel=1e-5)
    assert at_end == pytest.approx(ibp, rel=1e-5)
    # Over init seeds 0-2 (1 and 2 threads alike): IBP 4.11-5.11, CROWN-IBP 3.18-3.69 (IBP 0.93-1.42 higher);
    # halfway 0.47-0.71 from either end. Bounds: about half the smallest measured gap.
    assert ibp - at_start > 0.45
    assert ibp - halfway > 0.2 and halfway - at_start > 0.2


def test_kappa_weighs_the_clean_and_robust_terms(batch_at_init):
    # kappa ramps from kappa_start at eps 0 to kappa_end at eps_max: halfway up the ramp it is their mean.
    certifier, x, y = batch_at_init
    clean = F.cross_entropy(certifier.classifier(x), y).item()
    robust = robust_cross_entropy(certifier.bounds(x, EPS, "IBP", "linf", margin_spec(y, 10))).item()
    assert robust > clean + 1  # the two terms differ, so the weight is visible
    ramped = CertifiedTraining(method="IBP", kappa_start=1.0, kappa_end=0.0).loss(certifier, x, y, EPS, 2 * EPS, "linf")[0].item()
    assert ramped == pytest.approx(0.5 * clean + 0.5 * robust, rel=1e-5)
    assert robust_loss(certifier, x, y, "IBP", EPS, 2 * EPS, kappa=1.0) == pytest.approx(clean, rel=1e-5)


def test_smoothed_ramp():
    values = [smoothed_eps(step, 10, 100, 0.11) for step in range(0, 130)]
    assert values[:11] == [0.0] * 11
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[110:] == [0.11] * 20
    # Slow polynomial start: a quarter into the ramp eps is far below a linear ramp's quarter.
    assert values[35] < 0.25 * 0.11 / 2
    # No jump where the polynomial hands over to the line.
    assert abs(values[36] - values[35]) < 2 * abs(values[35] - values[34]) + 1e-9


def test_smoothed_ramp_is_auto_lirpas_smoothed_scheduler():
    lirpa()
    from auto_LiRPA.eps_scheduler import SmoothedScheduler

    # Its ramp starts after epoch `start` - 1 and lasts `length` epochs; 25 batches an epoch give our steps 25 to 125.
    scheduler = SmoothedScheduler(0.11, "start=2,length=4,mid=0.25,beta=4.0")
    scheduler.set_epoch_length(25)
    for step in range(150):
        scheduler.step_batch()
        assert smoothed_eps(step, 25, 100, 0.11) == pytest.approx(scheduler.get_eps(), abs=1e-9), step


@pytest.mark.parametrize("kwargs, field", [
    ({"method": "CROWN"}, "method"), ({"eps": 0}, "eps"), ({"eps_scale": 0.9}, "eps_scale"), ({"epochs": 0}, "epochs"),
    ({"warmup_epochs": 5, "ramp_epochs": 30, "epochs": 30}, "ramp_epochs"), ({"lr": 0}, "lr"), ({"kappa_end": 2}, "kappa_end"),
])
def test_invalid_parameters_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CertifiedTraining(**kwargs)
