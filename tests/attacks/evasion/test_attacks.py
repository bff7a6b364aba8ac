"""Behaviour of FGSM, PGD and Carlini-Wagner on the trained digits CNN."""

from __future__ import annotations

import pytest
import torch

from attacks import make_attack
from attacks.evasion import FGSM, PGD, CarliniWagnerL2


# Spreads below: the digits CNN trained with seeds 0-2 under OMP_NUM_THREADS 1 and 2 (6 models), as other
# machines' float kernels give other models; the fixture is seed 0.


def test_cw_default_budget_finds_near_minimal_perturbations(digits_model, digits):
    """CW breaks every digit, and a strong ball attack (PGD-20 in L2) allowed only CW's median norm breaks
    about half of them, as it must if CW's perturbations are close to the smallest that work."""
    x, y = digits.test.x[:200], digits.test.y[:200]
    result = CarliniWagnerL2().attack(digits_model, x, y)
    median = result.l2[result.success].median().item()
    # Spread: success 1.0 on every model; median L2 0.567-0.601; PGD-L2 success at that median 0.500-0.515.
    assert result.success.float().mean().item() >= 0.99
    assert median <= 0.7
    assert PGD(eps=median, norm="l2", steps=20).attack(digits_model, x, y).success.float().mean().item() <= 0.6


def test_cw_binary_search_shrinks_perturbation(digits_model, digits_eval):
    x, y = digits_eval[0][:64], digits_eval[1][:64]
    one_step = CarliniWagnerL2(binary_search_steps=1, max_iterations=100, initial_const=10.0).attack(digits_model, x, y)
    searched = CarliniWagnerL2(binary_search_steps=6, max_iterations=100, initial_const=10.0).attack(digits_model, x, y)
    both = one_step.success & searched.success
    assert both.float().mean() > 0.9
    # Spread: both succeed on all 64; mean L2 ratio searched / one step 0.611-0.627.
    assert searched.l2[both].mean() < one_step.l2[both].mean() * 0.75


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
    assert torch.equal(result.success, digits_model.predict(result.x_adv) == target)
    # Spread: 92-98% reach the target (100 steps instead of 40 reach no more).
    assert result.success.float().mean() >= 0.85
    # Without a target, each example gets a random other class (never its own label).
    assert not (PGD(targeted=True).random_targets(y, 10) == y).any()
    random = PGD(eps=0.3, steps=40, targeted=True).attack(digits_model, x, y)
    # Spread: 95-96% reach their random target, 1-2% keep their label.
    assert random.success.float().mean() >= 0.85 and random.robust.float().mean() < 0.05


def test_targeted_fgsm_moves_towards_its_target(digits_model, digits_eval):
    x, y = digits_eval
    target = (y + 1) % 10
    targeted = FGSM(eps=0.3, targeted=True).attack(digits_model, x, y, target=target)
    untargeted = FGSM(eps=0.3).attack(digits_model, x, y)
    assert torch.equal(targeted.success, digits_model.predict(targeted.x_adv) == target)
    # Spread: targeted success 0.60-0.64; the untargeted attack lands on the same class 0.10-0.14.
    chance = (digits_model.predict(untargeted.x_adv) == target).float().mean()
    assert targeted.success.float().mean() >= chance + 0.3


def test_targeted_cw_reaches_targets_at_a_larger_norm(digits_model, digits_eval):
    x, y = digits_eval[0][:32], digits_eval[1][:32]
    target = (y + 1) % 10
    targeted = CarliniWagnerL2(targeted=True).attack(digits_model, x, y, target=target)
    untargeted = CarliniWagnerL2().attack(digits_model, x, y)
    assert torch.equal(targeted.success, digits_model.predict(targeted.x_adv) == target)
    # Spread: every example reaches its target; median L2 0.81-0.88 targeted, 0.56-0.58 untargeted.
    assert targeted.success.float().mean() >= 0.95
    # One given class is further away than the nearest wrong class.
    assert targeted.l2[targeted.success].median() > untargeted.l2[untargeted.success].median()


def test_pgd_is_stronger_than_fgsm(digits_model, digits_eval):
    x, y = digits_eval
    fgsm = FGSM(eps=0.1).attack(digits_model, x, y).robust.float().mean()
    pgd = PGD(eps=0.1, steps=20).attack(digits_model, x, y).robust.float().mean()
    # Spread: FGSM robust accuracy 64.1-68.8%, PGD-20 60.9-65.6% on these 128 digits.
    assert pgd < fgsm


def test_pgd_restarts_break_more_examples(digits_model, digits):
    x, y = digits.test.x, digits.test.y
    once = PGD(eps=0.15, steps=10).attack(digits_model, x, y).robust
    restarted = PGD(eps=0.15, steps=10, restarts=5).attack(digits_model, x, y).robust
    assert not (restarted & ~once).any()  # a restart never undoes a success
    # Spread: 5 random starts break 7-11 more of the 359 digits than one.
    assert (once & ~restarted).sum() >= 3


def test_pass_counters(digits_model, digits_eval):
    x, y = digits_eval
    result = PGD(eps=0.1, steps=7).attack(digits_model, x, y)
    assert result.n_backward == 7 * len(x)
    assert result.n_forward == 8 * len(x)  # 7 steps + the final prediction
    restarted = PGD(eps=0.1, steps=7, restarts=3).attack(digits_model, x, y)
    assert restarted.n_backward == 3 * 7 * len(x)
    # 3 runs of 7 steps, the first run's loss, each later run's loss, the final prediction
    assert restarted.n_forward == (3 * 7 + 1 + 2 + 1) * len(x)


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
