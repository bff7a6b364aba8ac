"""RiFT on digits: MRC for every conv/linear module, fine-tuning of the least critical one, the alpha rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.evasion.pgd import PGD
from defenses import make_defense
from defenses.rift import RiFT, split
from secsuite.model import Classifier
from secsuite.threat import ThreatModel

THREAT = ThreatModel(norm="linf", eps=[0.2])


@pytest.fixture(scope="module")
def rift_result(digits, digits_model):
    defense = make_defense("rift", adversarial_training={"name": "pgd_at", "epochs": 3, "warmup_epochs": 1, "steps": 5},
                           ascent_epochs=3, mrc_examples=256, finetune_epochs=4)
    return defense, defense.fit(digits_model, digits.train, THREAT)


def test_mrc_table_covers_every_conv_and_linear_module(rift_result, digits_model):
    _, result = rift_result
    table = result.details["mrc_table"]
    expected = [name for name, m in digits_model.net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [row["module"] for row in table] == expected
    assert all(row["mrc"] >= 0 for row in table) and max(row["mrc"] for row in table) > 0.05
    assert result.details["finetuned_module"] == min(table, key=lambda row: row["mrc"])["module"]
    # The most critical module's worst-case weight perturbation costs robust accuracy.
    most = max(table, key=lambda row: row["mrc"])
    assert most["robust_acc_worst"] < max(row["robust_acc_worst"] for row in table)
    for row in table:
        assert row["module"] in result.details["markdown"] and row["module"] in result.details["html"]
    assert "<img" in result.details["html"]


def test_alpha_rule_keeps_robustness_within_tolerance(rift_result, digits):
    defense, result = rift_result
    sweep = result.details["alpha_sweep"]
    assert [row["alpha"] for row in sweep] == pytest.approx([i / 10 for i in range(11)])
    base = sweep[0]["robust_acc"]
    allowed = [row for row in sweep if 100 * (base - row["robust_acc"]) <= defense.tolerance + 1e-9]
    (chosen,) = [row for row in sweep if row["chosen"]]
    assert chosen["alpha"] == result.details["chosen_alpha"]
    assert 100 * (base - chosen["robust_acc"]) <= defense.tolerance + 1e-9
    assert chosen["clean_acc"] == max(row["clean_acc"] for row in allowed)
    # The returned model is the chosen interpolation: it reproduces the sweep's numbers on the held-out split.
    _, validation = split(digits.train, defense.validation_fraction, defense.seed)
    model = result.classifier
    assert model.accuracy(validation.x, validation.y) == pytest.approx(chosen["clean_acc"])
    robust = PGD(eps=0.2, steps=10, seed=defense.seed).attack(model, validation.x, validation.y).robust.float().mean().item()
    assert robust == pytest.approx(chosen["robust_acc"])
    assert {row["stage"] for row in result.log} == {"adversarial_training", "alpha_sweep"}


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
