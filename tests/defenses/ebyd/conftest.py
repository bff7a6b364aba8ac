from __future__ import annotations

import pytest
import torch

from attacks.backdoor import BackdoorAttack, BadNets, Blended, bn_cnn, train_model
from secsuite.data import load_dataset
from secsuite.model import Classifier


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    data = load_dataset(f"mnist:{mnist_dir}")
    # The first images in stored order (MNIST's idx files are not sorted by class): the data every bound here was measured on.
    return data.train.head(4000), data.test.head(1000)


@pytest.fixture(scope="session")
def mnist_clean_model(mnist):
    train, _ = mnist
    torch.manual_seed(0)
    model = Classifier(bn_cnn(10, (1, 28, 28)), 10, (1, 28, 28))
    train_model(model, train, epochs=6, lr=2e-3)
    return model


def _backdoored(mnist, attack: BackdoorAttack) -> tuple[Classifier, BackdoorAttack]:
    train, _ = mnist
    torch.manual_seed(0)
    model = Classifier(bn_cnn(10, (1, 28, 28)), 10, (1, 28, 28))
    attack.train(model, train, epochs=6, lr=2e-3)
    return model, attack


@pytest.fixture(scope="session")
def mnist_badnets(mnist):
    """A BadNets backdoor with target 3 (not 0, so a detector that always answers 0 fails)."""
    return _backdoored(mnist, BackdoorAttack(BadNets(3), target=3, rate=0.1))


@pytest.fixture(scope="session")
def mnist_blended(mnist):
    return _backdoored(mnist, BackdoorAttack(Blended(0.2), target=0, rate=0.1))


@pytest.fixture(scope="session")
def defender_clean(mnist):
    from defenses.ebyd import clean_subset

    train, _ = mnist
    # A small fraction of the (clean) training data, as in the paper.
    return clean_subset(train, 200 / len(train), seed=123)
