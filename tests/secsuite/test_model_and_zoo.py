"""Classifier wrapper (normalisation, checks, counters) and the zoo architectures."""

from __future__ import annotations

import pytest
import torch

from secsuite.errors import DataError
from secsuite.model import Classifier
from secsuite.zoo import build


def test_normalisation_is_inside():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 2))
    classifier = Classifier(net, 2, (3, 1, 1), mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    x = torch.rand(4, 3, 1, 1)
    assert torch.allclose(classifier(x), net((x - 0.5) / 0.25))


def test_counters_count_images():
    classifier = Classifier(build("small_cnn", 10, (1, 8, 8)), 10, (1, 8, 8))
    x = torch.rand(5, 1, 8, 8, requires_grad=True)
    classifier(x).sum().backward()
    classifier(x.detach())
    assert classifier.counters() == (10, 5)


@pytest.mark.parametrize("x,y,message", [
    (torch.rand(2, 1, 9, 9), torch.zeros(2, dtype=torch.long), "shape"),
    (torch.full((2, 1, 8, 8), float("nan")), torch.zeros(2, dtype=torch.long), "NaN"),
    (torch.rand(2, 1, 8, 8) * 3, torch.zeros(2, dtype=torch.long), r"\[0, 1\]"),
    (torch.rand(2, 1, 8, 8), torch.tensor([0, 10]), "labels must be in"),
])
def test_bad_inputs_are_named(x, y, message):
    classifier = Classifier(build("small_cnn", 10, (1, 8, 8)), 10, (1, 8, 8))
    with pytest.raises(DataError, match=message):
        classifier.check_inputs(x, y)
