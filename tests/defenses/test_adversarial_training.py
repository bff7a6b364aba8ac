"""PGD-AT and TRADES on digits: more PGD accuracy than plain training, TRADES' objective, warm-up, resume, bad parameters."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from attacks.evasion.pgd import PGD
from defenses import make_defense
from defenses.adversarial_training import PGDAT, TRADES
from secsuite.threat import ThreatModel
from secsuite.training import train_classifier

# Digits (8x8) at Linf 0.2: the undefended CNN keeps 2-5% under PGD-20.
EPS = 0.2


def pgd20_accuracy(classifier, data, eps=EPS, norm="linf"):
    return PGD(eps=eps, norm=norm, steps=20).attack(classifier, data.x, data.y).robust.float().mean().item()


def erm_copy(classifier, data, epochs, lr, batch_size):
    """Plain training (empirical risk minimisation) of a copy: the control that adversarial training must beat."""
    control = copy.deepcopy(classifier)
    train_classifier(control, data, epochs=epochs, lr=lr, batch_size=batch_size, seed=0)
    return control


# Spread (digits CNN and defense seeds 0-2, OMP_NUM_THREADS 1 and 2: 6 runs; PGD-20 accuracy on the 359 test digits):
#   PGD-AT (lr 1e-3): 25.3-33.4%, its plain-training control 2.0-5.0%; gain 20.9-29.0 points
#   TRADES (lr 3e-3): 18.4-31.5%, its plain-training control 2.5-4.2%; gain 15.8-27.3 points
# Clean accuracy below the control's: PGD-AT 1.1-2.5 points, TRADES 2.2-5.0 points.
@pytest.mark.parametrize("name, lr, min_gain", [("pgd_at", 1e-3, 0.15), ("trades", 3e-3, 0.1)])
def test_adversarial_training_beats_plain_training_under_pgd(digits, digits_model, name, lr, min_gain):
    weights_before = copy.deepcopy(digits_model.state_dict())
    result = make_defense(name, epochs=5, warmup_epochs=2, batch_size=64, lr=lr).fit(digits_model, digits.train, ThreatModel(eps=[0.1, EPS]))
    control = erm_copy(digits_model, digits.train, epochs=5, lr=lr, batch_size=64)
    defended = result.classifier
    assert pgd20_accuracy(defended, digits.test) >= pgd20_accuracy(control, digits.test) + min_gain
    assert defended.accuracy(digits.test.x, digits.test.y) >= control.accuracy(digits.test.x, digits.test.y) - 0.08
    assert [row["eps"] for row in result.log] == pytest.approx([0.1, 0.2, 0.2, 0.2, 0.2])
    assert result.details == {"eps": EPS, "norm": "linf", "resumed_from_epoch": 0}
    # fit trains a copy: the input model is untouched
    for key, before in weights_before.items():
        assert torch.equal(before, digits_model.state_dict()[key])


def test_l2_adversarial_training(digits, digits_model):
    # Spread as above: PGD-AT 14.8-19.8%, its plain-training control 3.1-5.0%; gain 11.4-15.2 points.
    eps = 1.0
    result = PGDAT(epochs=4, warmup_epochs=1).fit(digits_model, digits.train, ThreatModel(norm="l2", eps=[eps]))
    control = erm_copy(digits_model, digits.train, epochs=4, lr=1e-3, batch_size=128)
    assert pgd20_accuracy(result.classifier, digits.test, eps, "l2") >= pgd20_accuracy(control, digits.test, eps, "l2") + 0.08
    assert result.details["norm"] == "l2"


def test_trades_loss_is_clean_cross_entropy_plus_beta_times_the_maximised_kl(digits, digits_model):
    """Zhang et al.'s objective on one batch: CE(f(x), y) + beta * KL(f(x) || f(x')), x' maximising that KL.
    One epoch of one batch logs exactly the loss of the starting model on it."""
    batch, threat = digits.train.subset(128), ThreatModel(eps=[EPS])

    def first_batch_loss(beta):
        return TRADES(beta=beta, epochs=1, batch_size=128, steps=5).fit(digits_model, batch, threat).log[0]["loss"]

    loss = {beta: first_batch_loss(beta) for beta in (0.0, 1.0, 6.0)}
    with torch.no_grad():
        logits = digits_model(batch.x)
        clean = F.cross_entropy(logits, batch.y).item()
        noise = torch.randint(0, 2, batch.x.shape, generator=torch.Generator().manual_seed(0)).float() * 2 - 1
        random_corner = digits_model((batch.x + EPS * noise).clamp(0, 1))
        kl_at_random = F.kl_div(F.log_softmax(random_corner, 1), F.softmax(logits, 1), reduction="batchmean").item()
    kl = loss[1.0] - loss[0.0]
    assert loss[0.0] == pytest.approx(clean, rel=1e-5)
    assert loss[6.0] - loss[0.0] == pytest.approx(6 * kl, rel=1e-3)
    # Spread (6 runs as above): the maximised KL 4.29-4.82, the KL at a random corner of the ball 0.096-0.133.
    assert kl > 10 * kl_at_random


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


@pytest.fixture(scope="module")
def mnist_setting(mnist_dir):
    """The benchmark's setting (small CNN, Linf 0.1, PGD-20) on 2,000 training and 500 test images: the starting
    model (5 epochs) and its plain-training control (3 more epochs, as many as adversarial training gets)."""
    from secsuite.data import load_dataset
    from secsuite.model import Classifier
    from secsuite.zoo import build

    data = load_dataset(f"mnist:{mnist_dir}")
    train, test = data.train.subset(2000), data.test.subset(500)
    torch.manual_seed(0)
    model = Classifier(build("small_cnn", 10, train.input_shape), 10, train.input_shape)
    train_classifier(model, train, epochs=5, seed=0)
    control = erm_copy(model, train, epochs=3, lr=1e-3, batch_size=128)
    return model, train, test, pgd20_accuracy(control, test, eps=0.1)


# Spread (model and defense seeds 0-2, OMP_NUM_THREADS 1 and 2: 6 runs; 500 test images): PGD-20 accuracy
# PGD-AT 83.4-83.8%, TRADES 83.4-87.0%, plain-training control 63.4-73.8% (gain 9.6-22.0 points); clean
# accuracy 95.6-97.0%. About 25 s per defense and 25 s for the shared start on an idle 2-core machine.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["pgd_at", "trades"])
def test_mnist_acceptance_setting_on_a_smaller_budget(mnist_setting, name):
    model, train, test, control_robust = mnist_setting
    result = make_defense(name, epochs=3, steps=5, warmup_epochs=1).fit(model, train, ThreatModel(eps=[0.1]))
    robust = pgd20_accuracy(result.classifier, test, eps=0.1)
    assert robust >= 0.75
    assert robust >= control_robust + 0.05
    assert result.classifier.accuracy(test.x, test.y) >= 0.93
