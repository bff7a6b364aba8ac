"""Defensive distillation through the audit on digits: the known gradient-masking result, and logits/T."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from defenses import make_defense
from defenses.distillation import fold_temperature, soft_label_cross_entropy
from secsuite import audit
from secsuite.errors import ModelError
from secsuite.evaluation import clean_section
from secsuite.model import Classifier
from secsuite.threat import parse_config
from secsuite.zoo import build

CONFIG = {
    "model": {"source": "zoo:small_cnn", "train_epochs": 15},
    "data": {"source": "digits", "limit": 100},
    "threat": {"norm": "linf", "eps": [0.0, 0.1, 0.2]},
    "evaluate": [{"kind": "attack", "name": "fgsm"}, {"kind": "attack", "name": "cw", "binary_search_steps": 5, "max_iterations": 100}],
    "defend": [{"name": "distillation", "temperature": 100, "epochs": 15}],
    "output": {"formats": ["json", "md"]},
}


@pytest.fixture(scope="module")
def distilled_report(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("distillation")
    return audit(parse_config(CONFIG), out_dir=out_dir), out_dir


def robust(entries, attack):
    return {r.eps: r.robust_acc for r in next(e for e in entries if e.name == attack).results}


# Spreads: threat and distillation seeds 0-2 under OMP_NUM_THREADS 1 and 2 (6 audits).


def test_distillation_reproduces_gradient_masking(distilled_report):
    report, out_dir = distilled_report
    (defense,) = report.defenses
    # Spread: clean 96-98%; FGSM accuracy at eps 0.2 distilled 92-96%, undistilled 4-9%; mean largest logit 1001-1045.
    assert defense.clean_acc >= 0.9
    undistilled, distilled = robust(report.attacks, "fgsm"), robust(defense.attacks, "fgsm")
    # FGSM "looks stronger" against the distilled model: its gradient is zero, so FGSM does not move.
    assert distilled[0.2] > undistilled[0.2] + 0.6
    assert sum(distilled.values()) > sum(undistilled.values())
    for entries in (report.attacks, defense.attacks):
        cw = next(e for e in entries if e.name == "cw")
        assert cw.unbounded_success_rate >= 0.95
    zero_gradient = [w.subject for w in report.warnings if w.code == "zero_gradients"]
    assert zero_gradient == ["distillation"]
    # Trained at T=100, deployed at T=1: the logits are about T times larger than an undistilled model's.
    assert defense.details["deployed_temperature"] == 1.0 and defense.details["mean_max_logit"] > 500
    assert "T=100" in (out_dir / "report.md").read_text()


def test_evaluating_logits_over_t_removes_the_masking(distilled_report, digits):
    report, out_dir = distilled_report
    net = build("small_cnn", 10, digits.train.input_shape)
    net.load_state_dict(torch.load(out_dir / "models" / "distillation.pt", weights_only=True))
    distilled = Classifier(net, 10, digits.train.input_shape).eval()
    scaled = copy.deepcopy(distilled)
    fold_temperature(scaled, 100.0)
    x = digits.test.x[:64]
    with torch.no_grad():
        torch.testing.assert_close(scaled(x) * 100, distilled(x), rtol=1e-4, atol=1e-3)
    data = digits.test.subset(100)
    # The saved state_dict is the evaluated model: it re-audits like any user model.
    assert distilled.accuracy(data.x, data.y) == pytest.approx(report.defenses[0].clean_acc)
    # Spread: zero-gradient fraction 94-97% deployed at T=1, 0% with logits/T.
    assert clean_section(distilled, data).zero_gradient_fraction > 0.8
    assert clean_section(scaled, data).zero_gradient_fraction < 0.02


def test_student_loss_is_minimised_by_matching_the_teacher_at_temperature():
    """The student learns the teacher's softened distribution softmax(t/T): at every T its loss is stationary
    exactly where its logits equal the teacher's, and not where they match only after a change of scale."""
    teacher = torch.tensor([[300.0, 150.0, -100.0, 0.0], [50.0, 320.0, 100.0, -150.0]])
    for temperature in (1.0, 20.0, 100.0):
        student = teacher.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(soft_label_cross_entropy(student, teacher, temperature), student)
        assert grad.abs().max().item() < 1e-6, temperature
    rescaled = (teacher / 100).requires_grad_(True)  # the same argmax and ranking, a different distribution at T=100
    (grad,) = torch.autograd.grad(soft_label_cross_entropy(rescaled, teacher, 100.0), rescaled)
    assert grad.abs().max().item() > 1e-3
    # The soft labels at T=100 are soft (the point of distillation); at T=1 they are one-hot.
    entropy = {T: soft_label_cross_entropy(teacher, teacher, T).item() for T in (1.0, 100.0)}
    assert entropy[1.0] < 1e-6 and entropy[100.0] > 0.5


def test_fold_refuses_a_model_whose_last_linear_is_not_the_output():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Tanh())
    with pytest.raises(ModelError, match="not the model's output layer"):
        fold_temperature(Classifier(net, 10, (1, 8, 8)), 10.0)
    with pytest.raises(ModelError, match="final nn.Linear"):
        fold_temperature(Classifier(nn.Sequential(nn.Conv2d(1, 10, 8), nn.Flatten()), 10, (1, 8, 8)), 10.0)


@pytest.mark.parametrize("params, name", [({"temperature": 0}, "temperature"), ({"temperature": -5}, "temperature"),
                                          ({"epochs": 0}, "epochs"), ({"lr": 0}, "lr"), ({"colour": 1}, "colour")])
def test_bad_parameters_name_the_parameter(params, name):
    with pytest.raises(ValueError, match=name):
        make_defense("distillation", **params)
