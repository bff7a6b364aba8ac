"""RiFT on digits: MRC ranks modules by how much their weights matter, the least critical one is fine-tuned,
the sweep runs from the adversarially trained model (alpha 0) to the fine-tuned one (alpha 1), and the returned
model is the interpolation at the chosen alpha."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from attacks.evasion.pgd import PGD
from defenses import make_defense
from defenses.rift import RiFT, split
from secsuite.model import Classifier
from secsuite.threat import ThreatModel

THREAT = ThreatModel(norm="linf", eps=[0.2])
AT_CONFIG = {"name": "pgd_at", "epochs": 3, "warmup_epochs": 1, "steps": 5}


@pytest.fixture(scope="module")
def rift_split(digits):
    """RiFT's own split of the training data (default validation_fraction 0.2, seed 0)."""
    return split(digits.train, 0.2, 0)


@pytest.fixture(scope="module")
def at_model(digits_model, rift_split):
    """The adversarially trained model RiFT's sub-config trains, trained here on the same split."""
    params = {k: v for k, v in AT_CONFIG.items() if k != "name"}
    return make_defense("pgd_at", eps=0.2, norm="linf", **params).fit(digits_model, rift_split[0], THREAT).classifier


@pytest.fixture(scope="module")
def rift_result(digits, digits_model):
    defense = make_defense("rift", adversarial_training=AT_CONFIG, ascent_epochs=3, mrc_examples=256, finetune_epochs=4)
    return defense, defense.fit(digits_model, digits.train, THREAT)


def accuracies(model, data, seed=0):
    """Clean and PGD-10 accuracy, the sweep's own measurement."""
    robust = PGD(eps=0.2, steps=10, seed=seed).attack(model, data.x, data.y).robust.float().mean().item()
    return model.accuracy(data.x, data.y), robust


def clean_loss(model, data):
    with torch.no_grad():
        return F.cross_entropy(model(data.x), data.y).item()


def test_mrc_table_covers_every_conv_and_linear_module(rift_result, digits_model):
    _, result = rift_result
    table = result.details["mrc_table"]
    expected = [name for name, m in digits_model.net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [row["module"] for row in table] == expected
    assert result.details["finetuned_module"] == min(table, key=lambda row: row["mrc"])["module"]
    for row in table:
        assert row["module"] in result.details["markdown"] and row["module"] in result.details["html"]
    assert "<img" in result.details["html"]


def gradient_step_increase(model, module, x, y, budget):
    """Increase of the mean cross-entropy when `module`'s weight moves budget * ||weight|| along its gradient."""
    weight = module.weight
    original = weight.detach().clone()
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, weight)
    with torch.no_grad():
        weight.add_(budget * original.norm() * grad / grad.norm())
        increase = F.cross_entropy(model(x), y).item() - loss.item()
        weight.copy_(original)
    return increase


class _TwoHeads(nn.Module):
    """The digits CNN's features, then two copies of its trained output layer mixed 0.9 / 0.1: the logits are
    the original model's, both heads hold the same weights, but the major head's weights move them 9x more."""

    def __init__(self, net: nn.Sequential):
        super().__init__()
        self.features = copy.deepcopy(net[:-1])
        self.major, self.minor = copy.deepcopy(net[-1]), copy.deepcopy(net[-1])

    def forward(self, x):
        features = self.features(x)
        return 0.9 * self.major(features) + 0.1 * self.minor(features)


def test_mrc_ranks_the_module_whose_weights_matter_more_as_more_critical(digits_model, digits):
    model = Classifier(_TwoHeads(digits_model.net), 10, digits_model.input_shape).eval()
    x, y = digits.train.x[:128], digits.train.y[:128]
    logits = model(x).detach()
    torch.testing.assert_close(logits, digits_model(x))
    x_adv = PGD(eps=0.05, steps=10).attack(model, x, y).x_adv

    def mrc(budget):
        rows = RiFT(budget=budget, ascent_epochs=3).criticality(model, x_adv, y)
        return {row["module"]: row["mrc"] for row in rows}

    small, default = mrc(0.02), mrc(0.1)
    # The ascent finds at least what one step of the full budget along the loss gradient finds (its first epoch
    # is that step when the gradient is large). Spread (seeds 0-2, 1 and 2 threads): MRC / that step's loss increase
    # 1.00-2.06 at budget 0.02; a gradient descent instead gives MRC 0 for the nearly linear minor head.
    for name, module in model.net.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert small[name] >= 0.9 * gradient_step_increase(model, module, x_adv, y, 0.02), name
    # Spread (digits CNN seeds 0-2, 1 and 2 threads): at budget 0.1 MRC major 1.03-2.35, minor 0.011-0.041
    # (ratio 43-210); major at budget 0.02: 0.074-0.097 (budget 0.1 / 0.02: 14-31x).
    assert default["major"] > 10 * default["minor"]
    # A larger weight budget finds a worse perturbation.
    assert default["major"] > 5 * small["major"]
    assert torch.equal(model(x), logits), "criticality must leave the weights unchanged"


def test_sub_config_trains_the_start_model(rift_result, at_model, rift_split):
    """alpha = 0 of the sweep is the adversarially trained model the sub-config describes."""
    _, result = rift_result
    alpha_zero = result.details["alpha_sweep"][0]
    assert alpha_zero["alpha"] == 0.0
    assert (alpha_zero["clean_acc"], alpha_zero["robust_acc"]) == pytest.approx(accuracies(at_model, rift_split[1]))
    assert {row["stage"] for row in result.log} == {"adversarial_training", "alpha_sweep"}


def test_sweep_runs_from_the_adversarially_trained_to_the_fine_tuned_model(rift_result, at_model, rift_split):
    """alpha = 0 is the adversarially trained model, alpha = 1 the fine-tuned one, and the returned model is
    alpha * fine-tuned + (1 - alpha) * adversarially trained at the chosen alpha, weight by weight."""
    defense, result = rift_result
    train, validation = rift_split
    tuned = copy.deepcopy(at_model)
    defense._finetune(tuned, dict(tuned.net.named_modules())[result.details["finetuned_module"]], train)
    sweep = result.details["alpha_sweep"]
    assert (sweep[0]["alpha"], sweep[-1]["alpha"]) == (0.0, 1.0)
    at_loss, tuned_loss = clean_loss(at_model, validation), clean_loss(tuned, validation)
    assert (sweep[0]["clean_acc"], sweep[0]["robust_acc"]) == pytest.approx(accuracies(at_model, validation))
    assert (sweep[-1]["clean_acc"], sweep[-1]["robust_acc"]) == pytest.approx(accuracies(tuned, validation))
    assert (sweep[0]["clean_loss"], sweep[-1]["clean_loss"]) == pytest.approx((at_loss, tuned_loss), rel=1e-4)
    # Fine-tuning on clean data lowers the clean validation loss, so the two ends are different models
    # (spread, digits CNN and defense seeds 0-2, 1 and 2 threads: 6-27% lower).
    assert tuned_loss < at_loss
    alpha = result.details["chosen_alpha"]
    chosen, start, fine_tuned = result.classifier.state_dict(), at_model.state_dict(), tuned.state_dict()
    for key, value in chosen.items():
        torch.testing.assert_close(value, alpha * fine_tuned[key] + (1 - alpha) * start[key])


def test_positive_alpha_returns_that_interpolation_not_the_start(digits_model, digits):
    """A start that lost clean accuracy (its output bias pushes every digit towards class 0) and a tuned model
    that has it: the rule must pick alpha > 0, and the returned model is that interpolation."""
    start = copy.deepcopy(digits_model)
    with torch.no_grad():
        start.net[-1].bias[0] += 20.0
    validation = digits.train.subset(200)
    defense = RiFT(alphas=[0.5, 1.0], tolerance=100.0)
    defense.resolved_eps, defense.resolved_norm = 0.2, "linf"
    rows, returned = defense._sweep(start, digits_model, validation)
    chosen = next(row for row in rows if row["chosen"])
    assert rows[0]["clean_acc"] < 0.5 and chosen["alpha"] > 0
    alpha, tuned = chosen["alpha"], digits_model.state_dict()
    for key, value in returned.state_dict().items():
        torch.testing.assert_close(value, alpha * tuned[key] + (1 - alpha) * start.state_dict()[key])
    assert returned.accuracy(validation.x, validation.y) == pytest.approx(chosen["clean_acc"])
    assert not torch.equal(returned.net[-1].bias, start.net[-1].bias)


def test_returned_model_is_no_less_accurate_and_within_the_robustness_tolerance(rift_result, at_model, rift_split):
    """RiFT's rule, checked by measuring the returned model and the adversarially trained one on the held-out split."""
    defense, result = rift_result
    validation = rift_split[1]
    clean, robust = accuracies(result.classifier, validation)
    clean_at, robust_at = accuracies(at_model, validation)
    assert 100 * (robust_at - robust) <= defense.tolerance + 1e-9
    assert clean >= clean_at


def test_without_sub_config_only_the_least_critical_module_changes(digits, digits_model):
    defense = RiFT(ascent_epochs=2, mrc_examples=64, finetune_epochs=2, finetune_lr=0.05, alphas=[0.5, 1.0])
    data = digits.train.subset(400)
    result = defense.fit(digits_model, data, THREAT)
    assert result.details["assumed_adversarially_trained"]
    target = result.details["finetuned_module"]
    allowed = {f"{target}.weight", f"{target}.bias"}

    def changed(model):
        before, after = dict(digits_model.net.named_parameters()), dict(model.net.named_parameters())
        return {name for name in before if not torch.equal(before[name], after[name])}

    assert changed(result.classifier) <= allowed
    tuned = defense.copy_classifier(digits_model)
    defense._finetune(tuned, dict(tuned.net.named_modules())[target], data)
    assert changed(tuned) == allowed


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return (x * self.weight).flatten(1)[:, :10]


def test_model_without_conv_or_linear_is_rejected(digits):
    model = Classifier(Scale(), 10, (1, 8, 8), name="scaler")
    with pytest.raises(ValueError, match="model 'scaler' has no conv/linear modules"):
        RiFT().fit(model, digits.train.subset(16), THREAT)


@pytest.mark.parametrize("params, threat, name", [
    ({"norm": "l2"}, THREAT, "norm"), ({"eps": 2.0}, THREAT, "eps"),
    ({"budget": 0}, None, "budget"), ({"alphas": [0.5, 1.5]}, None, "alphas"), ({"tolerance": -1}, None, "tolerance"),
    ({"adversarial_training": {"epochs": 2}}, None, "adversarial_training"), ({"validation_fraction": 1.0}, None, "validation_fraction"),
])
def test_bad_parameters_name_the_parameter(digits, digits_model, params, threat, name):
    with pytest.raises(ValueError, match=name):
        RiFT(**params).fit(digits_model, digits.train.subset(16), threat) if threat else RiFT(**params)
