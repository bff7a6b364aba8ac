"""Property tests: every attack stays in its eps ball and in [0,1], and is deterministic under a seed."""

from __future__ import annotations

import torch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attacks.evasion import APGD, FGSM, PGD, CarliniWagnerL2

attack_specs = st.one_of(
    st.builds(lambda eps, norm: FGSM(eps=eps, norm=norm), st.floats(0.0, 0.5), st.sampled_from(["linf", "l2"])),
    st.builds(lambda eps, norm, steps, seed: PGD(eps=eps, norm=norm, steps=steps, seed=seed),
              st.floats(0.0, 0.5), st.sampled_from(["linf", "l2"]), st.integers(1, 4), st.integers(0, 1000)),
    st.builds(lambda eps, norm, steps, loss, targeted: APGD(eps=eps, norm=norm, steps=steps, loss=loss, targeted=targeted),
              st.floats(0.0, 0.5), st.sampled_from(["linf", "l2"]), st.integers(1, 6), st.sampled_from(["ce", "dlr"]), st.booleans()),
)


@settings(max_examples=25, deadline=None)
@given(attack=attack_specs, start=st.integers(0, 300))
def test_output_in_ball_and_box(digits_model, digits, attack, start):
    x, y = digits.test.x[start : start + 16], digits.test.y[start : start + 16]
    result = attack.attack(digits_model, x, y)
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    norms = (result.x_adv - x).flatten(1)
    size = norms.abs().amax(1) if attack.norm == "linf" else norms.norm(dim=1)
    assert (size <= attack.eps + 1e-5).all()


@pytest.mark.parametrize("attack", [
    PGD(eps=0.05, steps=10, step_size=0.05), PGD(eps=0.5, norm="l2", steps=10, step_size=0.5),
    APGD(eps=0.05, steps=10), APGD(eps=0.5, norm="l2", steps=10),
], ids=["pgd-linf", "pgd-l2", "apgd-linf", "apgd-l2"])
def test_iterative_attacks_end_on_or_inside_the_ball(digits_model, digits_eval, attack):
    # Steps as long as the radius: unprojected iterates would leave the ball after one or two steps.
    x, y = digits_eval
    size = attack.attack(digits_model, x, y).norms(attack.norm)
    assert size.max() <= attack.eps + 1e-5
    assert size.max() >= 0.99 * attack.eps  # and the attack does use the ball


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["linf", "l2"]))
def test_same_seed_same_output(digits_model, digits, seed, norm):
    x, y = digits.test.x[:16], digits.test.y[:16]
    for make in (lambda: PGD(eps=0.2, norm=norm, steps=3, seed=seed), lambda: APGD(eps=0.2, norm=norm, steps=3, restarts=2, seed=seed)):
        assert torch.equal(make().attack(digits_model, x, y).x_adv, make().attack(digits_model, x, y).x_adv)


@settings(max_examples=4, deadline=None)
@given(start=st.integers(0, 300))
def test_cw_output_in_box_and_deterministic(digits_model, digits, start):
    x, y = digits.test.x[start : start + 8], digits.test.y[start : start + 8]
    first = CarliniWagnerL2(binary_search_steps=2, max_iterations=20).attack(digits_model, x, y)
    second = CarliniWagnerL2(binary_search_steps=2, max_iterations=20).attack(digits_model, x, y)
    assert first.x_adv.min() >= 0 and first.x_adv.max() <= 1
    assert torch.equal(first.x_adv, second.x_adv)
