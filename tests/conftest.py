"""Shared fixtures: real small data (digits, the MNIST test set shipped in data/mnist) and a trained digits CNN."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from secsuite.data import load_dataset
from secsuite.model import Classifier
from secsuite.training import train_classifier
from secsuite.zoo import build

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO_ROOT / "data" / "mnist"


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_model(digits) -> Classifier:
    torch.manual_seed(0)
    classifier = Classifier(build("small_cnn", 10, digits.train.input_shape), 10, digits.train.input_shape, name="digits_cnn")
    train_classifier(classifier, digits.train, epochs=30, seed=0)
    return classifier.eval()


@pytest.fixture(scope="session")
def digits_eval(digits):
    """A fixed evaluation batch: the first 128 test digits."""
    return digits.test.x[:128], digits.test.y[:128]


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return MNIST_DIR
