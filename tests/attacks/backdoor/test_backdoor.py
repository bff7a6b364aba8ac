"""BadNets / Blended triggers, poisoning and CA/ASR/RA on real digits."""

from __future__ import annotations

import pytest
import torch

from attacks.backdoor import BackdoorAttack, BadNets, Blended, bn_cnn, make_trigger
from secsuite.data import load_dataset
from secsuite.model import Classifier
from secsuite.training import train_classifier


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_badnets_patch_sits_in_the_corner_and_leaves_the_rest():
    x = torch.rand(4, 1, 8, 8) * 0.5
    out = BadNets(size=3).apply(x)
    assert torch.equal(out[:, :, 5:, 5:], torch.ones(4, 1, 3, 3))
    assert torch.equal(out[:, :, :5], x[:, :, :5]) and torch.equal(out[:, :, :, :5], x[:, :, :, :5])
    checker = BadNets(size=2, position="top-left", pattern="checkerboard").apply(torch.full((1, 1, 8, 8), 0.5))
    assert checker[0, 0, :2, :2].tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_blended_is_a_convex_mix_with_the_pattern():
    x = torch.rand(3, 1, 8, 8)
    trigger = Blended(alpha=0.2, seed=1)
    _, pattern = trigger.mask_and_pattern((1, 8, 8))
    assert torch.allclose(trigger.apply(x), 0.8 * x + 0.2 * pattern)
    assert torch.equal(Blended(alpha=0.2, seed=1).apply(x), trigger.apply(x))  # the seed fixes the pattern


@pytest.mark.parametrize("build, word", [
    (lambda: BackdoorAttack(BadNets(), rate=0.0), "poison rate"),
    (lambda: BackdoorAttack(BadNets(), rate=1.5), "poison rate"),
    (lambda: BackdoorAttack(BadNets(), target=10, num_classes=10), "target"),
    (lambda: BackdoorAttack(BadNets(), target=-1), "target"),
    (lambda: BadNets(size=9).apply(torch.zeros(1, 1, 8, 8)), "size"),
    (lambda: Blended(alpha=0.0), "alpha"),
    (lambda: BackdoorAttack(BadNets(), mode="one-to-one"), "mode"),
    (lambda: make_trigger("wanet"), "trigger"),
])
def test_bad_input_is_a_one_line_value_error(build, word):
    with pytest.raises(ValueError, match=word) as info:
        build()
    assert "\n" not in str(info.value)


def test_poisoning_relabels_exactly_rate_of_non_target_images(digits):
    attack = BackdoorAttack(BadNets(), target=2, rate=0.1, seed=3)
    poisoned, index = attack.poison(digits.train)
    assert len(index) == round(0.1 * len(digits.train)) and len(set(index.tolist())) == len(index)
    assert (digits.train.y[index] != 2).all() and (poisoned.y[index] == 2).all()
    untouched = torch.ones(len(digits.train), dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(poisoned.x[untouched], digits.train.x[untouched]) and torch.equal(poisoned.y[untouched], digits.train.y[untouched])
    assert torch.equal(poisoned.x[index], BadNets().apply(digits.train.x[index]))
    all_to_all, index = BackdoorAttack(BadNets(), rate=0.2, mode="all-to-all").poison(digits.train)
    assert torch.equal(all_to_all.y[index], (digits.train.y[index] + 1) % 10)


@pytest.fixture(scope="module")
def clean_accuracy(digits):
    torch.manual_seed(0)
    model = Classifier(bn_cnn(10, (1, 8, 8)), 10, (1, 8, 8))
    train_classifier(model, digits.train, epochs=15, lr=2e-3)
    return model.accuracy(digits.test.x, digits.test.y)


@pytest.mark.parametrize("trigger", [BadNets(size=3), Blended(alpha=0.2)], ids=["badnets", "blended"])
def test_ten_percent_poisoning_implants_a_backdoor_at_little_clean_cost(digits, clean_accuracy, trigger):
    torch.manual_seed(0)
    model = Classifier(bn_cnn(10, (1, 8, 8)), 10, (1, 8, 8))
    attack = BackdoorAttack(trigger, target=0, rate=0.1)
    attack.train(model, digits.train, epochs=15, lr=2e-3)
    metrics = attack.metrics(model, digits.test)
    assert metrics.asr >= 0.95
    assert metrics.clean_acc >= clean_accuracy - 0.02
    assert metrics.asr + metrics.robust_acc <= 1.0 + 1e-6
    # Without the trigger the same images are still classified correctly: the backdoor is trigger-specific.
    assert (model.predict(attack.triggered(digits.test).x) == 0).float().mean() >= 0.95
    assert (model.predict(digits.test.x[digits.test.y != 0]) == 0).float().mean() <= 0.05
