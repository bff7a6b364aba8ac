"""The black-box victim: what it answers, and the budget it enforces."""

from __future__ import annotations

import pytest
import torch

from attacks.extraction import BlackBoxVictim, BudgetExceeded


@pytest.fixture
def true_probs(digits, digits_model):
    with torch.no_grad():
        return digits_model(digits.test.x[:50]).softmax(1)


def test_probabilities_are_the_models_own_without_gradients(digits, digits_model, true_probs):
    probs = BlackBoxVictim(digits_model, 100).query(digits.test.x[:50])
    assert torch.allclose(probs, true_probs, atol=1e-6)
    assert not probs.requires_grad


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_reveals_exactly_the_k_largest_probabilities(digits, digits_model, true_probs, k):
    answer = BlackBoxVictim(digits_model, 100, output="top-k", top_k=k).query(digits.test.x[:50])
    values, index = true_probs.topk(k, dim=1)
    revealed = torch.zeros_like(true_probs, dtype=torch.bool).scatter_(1, index, True)
    # The k largest as they are (not renormalised), every other entry exactly zero.
    assert torch.allclose(answer.gather(1, index), values, atol=1e-6)
    assert (answer[~revealed] == 0).all()
    assert ((answer > 0).sum(1) == k).all()


def test_label_only_reveals_the_argmax_and_nothing_else(digits, digits_model, true_probs):
    answer = BlackBoxVictim(digits_model, 100, output="label").query(digits.test.x[:50])
    assert answer.dtype == torch.long and answer.shape == (50,)
    assert torch.equal(answer, true_probs.argmax(1))


def test_budget_is_enforced_before_answering(digits, digits_model):
    victim = BlackBoxVictim(digits_model, 50)
    victim.query(digits.test.x[:30])
    before = digits_model.n_forward
    # One image over the remaining 20 is refused whole, before it reaches the model.
    with pytest.raises(BudgetExceeded, match="30 of 50"):
        victim.query(digits.test.x[:21])
    assert digits_model.n_forward == before
    victim.query(digits.test.x[:20])
    assert victim.spent == 50 and victim.remaining == 0
    with pytest.raises(BudgetExceeded, match="50 of 50"):
        victim.query(digits.test.x[:1])
    assert digits_model.n_forward == before + 20


def test_constructor_validates(digits_model):
    for kwargs, name in [({"budget": 0}, "budget"), ({"budget": 10, "output": "logits"}, "output"),
                         ({"budget": 10, "output": "top-k", "top_k": 11}, "top_k")]:
        with pytest.raises(ValueError, match=name):
            BlackBoxVictim(digits_model, **kwargs)
