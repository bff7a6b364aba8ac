"""The black-box victim: what it answers, and the budget it enforces."""

from __future__ import annotations

import pytest
import torch

from attacks.extraction import BlackBoxVictim, BudgetExceeded


def test_outputs_reveal_only_what_the_threat_allows(digits, digits_model):
    x = digits.test.x[:20]
    probs = BlackBoxVictim(digits_model, 100).query(x)
    assert probs.shape == (20, 10) and torch.allclose(probs.sum(1), torch.ones(20), atol=1e-5)
    assert not probs.requires_grad
    top2 = BlackBoxVictim(digits_model, 100, output="top-k", top_k=2).query(x)
    assert ((top2 > 0).sum(1) <= 2).all()
    assert torch.equal(top2.argmax(1), probs.argmax(1))
    labels = BlackBoxVictim(digits_model, 100, output="label").query(x)
    assert labels.shape == (20,) and torch.equal(labels, probs.argmax(1))


def test_budget_is_enforced_before_answering(digits, digits_model):
    victim = BlackBoxVictim(digits_model, 50)
    victim.query(digits.test.x[:30])
    before = digits_model.n_forward
    with pytest.raises(BudgetExceeded, match="30 of 50"):
        victim.query(digits.test.x[:21])
    assert digits_model.n_forward == before  # the refused batch never reached the model
    victim.query(digits.test.x[:20])
    assert victim.spent == 50 and victim.remaining == 0


def test_constructor_validates(digits_model):
    for kwargs, name in [({"budget": 0}, "budget"), ({"budget": 10, "output": "logits"}, "output"),
                         ({"budget": 10, "output": "top-k", "top_k": 11}, "top_k")]:
        with pytest.raises(ValueError, match=name):
            BlackBoxVictim(digits_model, **kwargs)
