"""Behaviour of FGSM, PGD and Carlini-Wagner on the trained digits CNN."""

from __future__ import annotations

import pytest
import torch

from attacks import make_attack
from attacks.evasion import FGSM, PGD, CarliniWagnerL2


def test_cw_default_budget_succeeds_on_undefended_model(digits_model, digits):
    x, y = digits.test.x[:200], digits.test.y[:200]
    result = CarliniWagnerL2().attack(digits_model, x, y)
    assert result.success.float().mean().item() >= 0.99
    # Minimum-norm: CW needs much less L2 than FGSM-L2 needs to reach a comparable success rate.
    fgsm = FGSM(eps=1.5, norm="l2").attack(digits_model, x, y)
    assert result.l2[result.success].median() < 1.5
    assert fgsm.success.float().mean() < result.success.float().mean()


def test_cw_binary_search_shrinks_perturbation(digits_model, digits_eval):
    x, y = digits_eval[0][:64], digits_eval[1][:64]
    one_step = CarliniWagnerL2(binary_search_steps=1, max_iterations=100, initial_const=10.0).attack(digits_model, x, y)
    searched = CarliniWagnerL2(binary_search_steps=6, max_iterations=100, initial_const=10.0).attack(digits_model, x, y)
    both = one_step.success & searched.success
    assert both.float().mean() > 0.9
    assert searched.l2[both].mean() < one_step.l2[both].mean() * 0.95


def test_cw_confidence_buys_margin(digits_model, digits_eval):
    x, y = digits_eval[0][:48], digits_eval[1][:48]
    result = CarliniWagnerL2(confidence=5.0).attack(digits_model, x, y)
    with torch.no_grad():
        logits = digits_model(result.x_adv)
    other = logits.scatter(1, y[:, None], -1e4).amax(1)
    margin = other - logits.gather(1, y[:, None]).squeeze(1)
    assert (margin[result.success] >= 5.0 - 1e-3).float().mean() > 0.95


def test_cw_margin_masks_true_class_even_when_all_logits_negative():
    attack = CarliniWagnerL2()
    logits = torch.tensor([[-5.0, -1.0, -3.0]])
    # True class 1 has the largest logit; the best other is -3, so the margin is 2 (not -1 - 0 = -1).
    assert attack._margin(logits, torch.tensor([1])).item() == pytest.approx(2.0)


def test_targeted_pgd_reaches_targets(digits_model, digits_eval):
    x, y = digits_eval
    target = (y + 1) % 10
    result = PGD(eps=0.3, steps=40, targeted=True).attack(digits_model, x, y, target=target)
    assert result.success.float().mean() > 0.9
    assert (digits_model.predict(result.x_adv) == target).float().mean() > 0.9


def test_pgd_is_stronger_than_fgsm_and_restarts_do_not_hurt(digits_model, digits_eval):
    x, y = digits_eval
    fgsm = FGSM(eps=0.1).attack(digits_model, x, y).robust.float().mean()
    pgd = PGD(eps=0.1, steps=20).attack(digits_model, x, y).robust.float().mean()
    restarted = PGD(eps=0.1, steps=20, restarts=3).attack(digits_model, x, y).robust.float().mean()
    assert pgd <= fgsm
    assert restarted <= pgd + 1 / len(y)


def test_pass_counters(digits_model, digits_eval):
    x, y = digits_eval
    result = PGD(eps=0.1, steps=7).attack(digits_model, x, y)
    assert result.n_backward == 7 * len(x)
    assert result.n_forward == 8 * len(x)  # 7 steps + the final prediction


@pytest.mark.parametrize("name,kwargs,message", [
    ("pgd", {"steps": 0}, "steps"),
    ("pgd", {"restarts": 0}, "restarts"),
    ("pgd", {"step_size": -1.0}, "step_size"),
    ("cw", {"learning_rate": 0.0}, "learning_rate"),
    ("cw", {"binary_search_steps": 0}, "binary_search_steps"),
    ("nope", {}, "unknown attack"),
])
def test_bad_parameters_are_named(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_attack(name, 0.1, "linf", **kwargs)


def test_bad_eps_and_norm():
    with pytest.raises(ValueError, match="eps"):
        FGSM(eps=-0.1)
    with pytest.raises(ValueError, match="norm"):
        PGD(norm="l1")
