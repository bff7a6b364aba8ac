"""DFME, CaBaGe and Knockoff against a digits CNN: budgets (checked by an independent counter),
supported outputs, and how well the clones do."""

from __future__ import annotations

import pytest
import torch

from attacks.extraction import DFME, BlackBoxVictim, CaBaGe, Knockoff, Probe, UnsupportedOutput
from secsuite.model import Classifier
from secsuite.zoo import build


def new_clone(seed: int = 1) -> Classifier:
    torch.manual_seed(seed)
    return Classifier(build("small_cnn", 10, (1, 8, 8)), 10, (1, 8, 8))


class ImageCounter:
    """Counts images entering the victim's network, independently of the wrapper's own counter."""

    def __init__(self, model: Classifier):
        self.count = 0
        self.handle = model.net.register_forward_pre_hook(self._hook)

    def _hook(self, module, inputs) -> None:
        self.count += inputs[0].shape[0]


@pytest.fixture
def probe(digits, digits_model):
    return Probe(digits_model, digits.test)


@pytest.mark.parametrize("make", [
    lambda: DFME(batch_size=32, seed=0),
    lambda: CaBaGe(batch_size=32, clone_steps=1, seed=0),
])
def test_data_free_methods_spend_exactly_the_budget(digits_model, probe, make):
    budget = 457  # not a multiple of any batch: the last query must be truncated
    victim = BlackBoxVictim(digits_model, budget)
    counter = ImageCounter(digits_model)
    try:
        result = make().extract(victim, new_clone(), probe)
    finally:
        counter.handle.remove()
    assert counter.count == budget == result.queries_spent == victim.spent
    assert [p.queries for p in result.curve] == sorted(p.queries for p in result.curve)
    assert result.curve[-1].queries == budget


def test_knockoff_spends_at_most_its_pool_and_the_budget(digits, digits_model, probe):
    counter = ImageCounter(digits_model)
    try:
        small_budget = Knockoff(digits.train.subset(300), epochs=1, seed=0).extract(BlackBoxVictim(digits_model, 120), new_clone(), probe)
        small_pool = Knockoff(digits.train.subset(80), epochs=1, seed=0).extract(BlackBoxVictim(digits_model, 1000), new_clone(), probe)
    finally:
        counter.handle.remove()
    assert small_budget.queries_spent == 120 and small_pool.queries_spent == 80
    assert counter.count == 200


@pytest.mark.parametrize("output", ["label", "top-k"])
def test_dfme_refuses_victims_without_probabilities(digits_model, output):
    victim = BlackBoxVictim(digits_model, 100, output=output)
    with pytest.raises(UnsupportedOutput, match="dfme needs victim outputs in \\['probabilities'\\]"):
        DFME().extract(victim, new_clone())
    assert victim.spent == 0


@pytest.mark.parametrize("output", ["probabilities", "label"])
def test_knockoff_reaches_high_agreement(digits, digits_model, probe, output):
    pool = digits.train.subset(1000)
    result = Knockoff(pool, epochs=8, seed=0).extract(BlackBoxVictim(digits_model, 1000, output=output), new_clone(), probe)
    assert result.agreement >= 0.9, result.curve
    assert len(result.curve) == 5
    assert result.curve[-1].agreement > result.curve[0].agreement - 0.02


def test_cabage_learns_from_a_label_only_victim(digits_model, probe):
    result = CaBaGe(batch_size=64, clone_steps=2, seed=0).extract(BlackBoxVictim(digits_model, 1500, output="label"), new_clone(), probe)
    assert result.queries_spent == 1500
    # Chance is 10%; a data-free clone that learns anything from labels alone gets well above it.
    assert result.agreement > 0.3, result.curve


def test_constructors_validate(digits):
    with pytest.raises(ValueError, match="batch_size"):
        DFME(batch_size=0)
    with pytest.raises(ValueError, match="grad_eps"):
        DFME(grad_eps=0)
    with pytest.raises(ValueError, match="generators"):
        CaBaGe(generators=0)
    with pytest.raises(ValueError, match="balance_weight"):
        CaBaGe(balance_weight=-1)
    with pytest.raises(ValueError, match="epochs"):
        Knockoff(digits.train, epochs=0)


@pytest.mark.slow
def test_cabage_beats_dfme_at_the_same_budget(digits_model, probe):
    scores = {}
    for name, make in (("dfme", lambda s: DFME(seed=s)), ("cabage", lambda s: CaBaGe(seed=s))):
        scores[name] = sum(make(s).extract(BlackBoxVictim(digits_model, 4000), new_clone(s), probe).clone_acc for s in range(2)) / 2
    assert scores["cabage"] > scores["dfme"], scores
