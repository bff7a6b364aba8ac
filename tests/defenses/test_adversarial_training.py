"""PGD-AT and TRADES on digits: robustness actually rises, warm-up, resume, bad parameters."""

from __future__ import annotations

import pytest
import torch

from attacks.evasion.pgd import PGD
from defenses import make_defense
from defenses.adversarial_training import PGDAT, TRADES
from secsuite.threat import ThreatModel

# Digits (8x8) at Linf 0.2: the undefended CNN keeps < 15% under PGD-20.
EPS = 0.2


def pgd20_accuracy(classifier, data, eps=EPS, norm="linf"):
    return PGD(eps=eps, norm=norm, steps=20).attack(classifier, data.x, data.y).robust.float().mean().item()


@pytest.fixture(scope="module")
def baseline(digits, digits_model):
    return digits_model.accuracy(digits.test.x, digits.test.y), pgd20_accuracy(digits_model, digits.test)


# Measured (5 epochs from the trained CNN): PGD-AT about 30%, TRADES (lr 3e-3) about 23%, from about 5% undefended.
@pytest.mark.parametrize("name, lr, min_gain", [("pgd_at", 1e-3, 0.2), ("trades", 3e-3, 0.12)])
def test_adversarial_training_lifts_pgd_accuracy(digits, digits_model, baseline, name, lr, min_gain):
    clean_before, robust_before = baseline
    assert robust_before < 0.15
    result = make_defense(name, epochs=5, warmup_epochs=2, batch_size=64, lr=lr).fit(digits_model, digits.train, ThreatModel(eps=[0.1, EPS]))
    defended = result.classifier
    robust = pgd20_accuracy(defended, digits.test)
    assert robust >= robust_before + min_gain
    assert defended.accuracy(digits.test.x, digits.test.y) >= clean_before - 0.1
    assert [row["eps"] for row in result.log] == pytest.approx([0.1, 0.2, 0.2, 0.2, 0.2])
    assert result.details == {"eps": EPS, "norm": "linf", "resumed_from_epoch": 0}
    # fit works on a copy
    assert pgd20_accuracy(digits_model, digits.test) == pytest.approx(robust_before)


def test_l2_adversarial_training(digits, digits_model):
    eps = 1.0
    before = pgd20_accuracy(digits_model, digits.test, eps, "l2")
    result = PGDAT(epochs=4, warmup_epochs=1).fit(digits_model, digits.train, ThreatModel(norm="l2", eps=[eps]))
    assert pgd20_accuracy(result.classifier, digits.test, eps, "l2") >= before + 0.15
    assert result.details["norm"] == "l2"


class Interrupted(Exception):
    pass


class CrashingTRADES(TRADES):
    """Same name and parameters as TRADES (so the same checkpoint), but dies in its second epoch."""

    batches = 0

    def loss(self, classifier, x, y, eps, seed):
        CrashingTRADES.batches += 1
        if CrashingTRADES.batches > 4:
            raise Interrupted
        return super().loss(classifier, x, y, eps, seed)


def test_resume_from_checkpoint_matches_uninterrupted_run(digits, digits_model, tmp_path):
    data = digits.train.subset(256)
    threat = ThreatModel(eps=[0.1])
    params = dict(epochs=2, batch_size=64, steps=3, checkpoint_dir=str(tmp_path / "resumed"))
    with pytest.raises(Interrupted):
        CrashingTRADES(**params).fit(digits_model, data, threat)
    assert len(list((tmp_path / "resumed").glob("trades-*.pt"))) == 1
    resumed = TRADES(**params).fit(digits_model, data, threat)
    straight = TRADES(**{**params, "checkpoint_dir": None}).fit(digits_model, data, threat)
    assert resumed.details["resumed_from_epoch"] == 1 and straight.details["resumed_from_epoch"] == 0
    assert [row["loss"] for row in resumed.log] == pytest.approx([row["loss"] for row in straight.log])
    for a, b in zip(resumed.classifier.state_dict().values(), straight.classifier.state_dict().values()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("params, threat, match", [
    ({"norm": "l2"}, ThreatModel(norm="linf", eps=[0.1]), "norm 'l2' is not the threat model's norm"),
    ({"eps": 1.5}, ThreatModel(norm="linf", eps=[0.1]), "eps must be in"),
    ({"eps": 9.0}, ThreatModel(norm="l2", eps=[0.5]), "eps must be in"),
])
def test_budget_outside_threat_model_is_rejected(digits, digits_model, params, threat, match):
    with pytest.raises(ValueError, match=match):
        PGDAT(epochs=1, **params).fit(digits_model, digits.train.subset(8), threat)


@pytest.mark.parametrize("params, name", [({"eps": -0.1}, "eps"), ({"norm": "l1"}, "norm"), ({"epochs": 0}, "epochs"),
                                          ({"steps": 1.5}, "steps"), ({"beta": -1}, "beta"), ({"warmup_epochs": -1}, "warmup_epochs")])
def test_bad_parameters_name_the_parameter(params, name):
    with pytest.raises(ValueError, match=name):
        make_defense("trades", **params)


def test_unknown_defense_name():
    with pytest.raises(ValueError, match="unknown defense 'madry'"):
        make_defense("madry")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pgd_at", "trades"])
def test_mnist_acceptance_setting_on_a_smaller_budget(mnist_dir, name):
    """The benchmark's setting (small CNN, Linf 0.1, PGD-20) on 2,000 training and 500 test images."""
    from secsuite.data import load_dataset
    from secsuite.model import Classifier
    from secsuite.training import train_classifier
    from secsuite.zoo import build

    data = load_dataset(f"mnist:{mnist_dir}")
    train, test = data.train.subset(2000), data.test.subset(500)
    torch.manual_seed(0)
    model = Classifier(build("small_cnn", 10, train.input_shape), 10, train.input_shape)
    train_classifier(model, train, epochs=5, seed=0)
    before = pgd20_accuracy(model, test, eps=0.1)
    result = make_defense(name, epochs=3, steps=5, warmup_epochs=1).fit(model, train, ThreatModel(eps=[0.1]))
    robust = pgd20_accuracy(result.classifier, test, eps=0.1)
    assert robust >= max(0.65, before + 0.1)
    assert result.classifier.accuracy(test.x, test.y) >= 0.93
