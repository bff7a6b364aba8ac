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


def test_output_contract_is_checked_without_counting():
    from secsuite.errors import ModelError

    x = torch.rand(2, 1, 8, 8)
    fits = Classifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), 10, (1, 8, 8))
    fits.check_outputs(x)
    assert fits.counters() == (0, 0)
    wrong_width = Classifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 9)), 10, (1, 8, 8))
    with pytest.raises(ModelError, match=r"shape \(2, 9\) for 2 images; expected \(2, 10\)"):
        wrong_width.check_outputs(x)
    # A module built for other images fails inside forward: named, not a torch traceback.
    other_size = Classifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), 10, (1, 8, 8), name="mlp")
    with pytest.raises(ModelError, match=r"model mlp fails on images of shape \(2, 1, 8, 8\)"):
        other_size.check_outputs(x)


def test_non_finite_parameters_are_named():
    from secsuite.errors import ModelError

    classifier = Classifier(build("small_cnn", 10, (1, 8, 8)), 10, (1, 8, 8))
    classifier.check_parameters("w.pt")
    with torch.no_grad():
        classifier.net[3].bias[1] = float("inf")
    with pytest.raises(ModelError, match=r"w.pt: 3.bias holds NaN or infinite values"):
        classifier.check_parameters("w.pt")
