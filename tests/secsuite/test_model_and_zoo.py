"""Classifier wrapper (normalisation, checks, counters) and the zoo architectures."""

from __future__ import annotations

import pytest
import torch

from secsuite.errors import DataError
from secsuite.model import Classifier
from secsuite.zoo import ATTENTIONS, build


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


@pytest.mark.parametrize("name,shape", [("small_cnn", (1, 28, 28)), ("resnet18", (3, 32, 32)),
                                        ("preact_resnet18", (3, 32, 32)), ("wrn_16_4", (3, 32, 32))])
def test_zoo_models_forward(name, shape):
    assert build(name, 10, shape)(torch.rand(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("activation", ["gelu", "quad", "relu"])
def test_vit_variants(attention, activation):
    vit = build("vit_small", 10, (1, 8, 8), patch=2, attention=attention, activation=activation)
    out = vit(torch.rand(3, 1, 8, 8))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


def test_attention_rows():
    from secsuite.zoo import attention_weights

    scores = torch.randn(2, 4, 5, 5)
    for kind in ("softmax", "2quad"):
        sums = attention_weights(scores, kind).sum(-1)
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-4)
    relu_rows = attention_weights(scores, "relu_softmax")
    assert (relu_rows >= 0).all() and (relu_rows.sum(-1) <= 1 + 1e-5).all()
    assert torch.allclose(attention_weights(scores, "scale"), scores / 5)
    with pytest.raises(ValueError, match="attention"):
        build("vit_small", 10, (1, 8, 8), attention="bogus")
