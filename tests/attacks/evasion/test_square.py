"""Square: a score-only search that keeps improvements with shrinking windows, its exact query budget, and the
reference's schedule and window patterns; robust accuracy against pyautoattack's SquareAttack (slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attacks.evasion import Square
from attacks.evasion.square import l2_window_pattern, window_fraction
from secsuite.model import Classifier
from tests.attacks.evasion.reference import digits_mlp, mean_robust_accuracy, reference_square  # noqa: F401


class _ScoresOnly(nn.Module):
    """Two classes with margin z_0 - z_1 = margin_of(x - x0), computed in numpy: no gradient can reach the input."""

    def __init__(self, margin_of, x0: torch.Tensor):
        super().__init__()
        self.margin_of, self.x0 = margin_of, x0.flatten().double().numpy()

    def forward(self, x):
        margin = self.margin_of(x.detach().flatten(1).double().numpy() - self.x0)
        return torch.from_numpy(np.stack([margin, np.zeros_like(margin)], 1)).float()


def _affine_problem(norm: str, eps: float, seed: int = 0, images: int = 16):
    """One image repeated, and a score-only model with margin <w, x - x0> + 3 * (the best drop): correct everywhere in
    the eps ball, where the best perturbation lowers the margin by eps * ||w||_1 (Linf) or eps * ||w||_2 (L2), the
    box [0, 1] never binding."""
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(64, generator=generator)
    x0 = 0.5 + 0.05 * torch.rand(1, 1, 8, 8, generator=generator)
    best_drop = eps * (w.abs().sum() if norm == "linf" else w.norm()).item()
    w_numpy = w.double().numpy()
    model = Classifier(_ScoresOnly(lambda delta: delta @ w_numpy + 3 * best_drop, x0), 2, (1, 8, 8)).eval()
    return model, x0.expand(images, -1, -1, -1).clone(), w, best_drop


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_search_keeps_improvements_with_shrinking_windows(norm, eps):
    # The fraction of the optimal margin drop reached in 1000 queries, mean over 16 images, then over problems 0-2:
    # Linf 0.55 (problems 0.35-0.67), L2 0.49 (0.42-0.56); other attack seeds move a problem's value by up to 0.1,
    # 1 and 2 threads give the same values. Broken variants (problems 0-2): accepting every proposal -0.02 (Linf) /
    # 0.03 (L2), windows that never shrink 0.12 / 0.15. The last row and column stay at their starting values (the
    # reference's window positions never reach them), so even the full search stays well short of 1.
    reached = []
    for problem in range(3):
        model, x, w, best_drop = _affine_problem(norm, eps, problem)
        result = Square(eps=eps, norm=norm, n_queries=1000).attack(model, x, torch.zeros(len(x), dtype=torch.long))
        reached.append((-((result.x_adv - x).flatten(1) @ w) / best_drop).mean().item())
        assert result.norms(norm).max() <= eps * (1 + 1e-5)
        assert result.n_backward == 0
    assert sum(reached) / 3 > 0.3, reached


def test_query_budget_is_exact():
    # No image can be broken, so each one spends the whole budget (its clean evaluation included); the attack's final
    # prediction adds one evaluation per image.
    model, x, _, _ = _affine_problem("linf", 0.1)
    result = Square(eps=0.1, norm="linf", n_queries=37).attack(model, x, torch.zeros(len(x), dtype=torch.long))
    assert result.n_forward == len(x) * 37 + len(x)


def test_images_leave_once_broken():
    # Any change of the image misclassifies it, so the starting point breaks every image: the clean evaluation and the
    # start are all the queries spent, plus the attack's final prediction.
    x0 = torch.full((1, 1, 8, 8), 0.5)
    model = Classifier(_ScoresOnly(lambda delta: 1e-3 - np.abs(delta).sum(1), x0), 2, (1, 8, 8)).eval()
    x = x0.expand(8, -1, -1, -1).clone()
    result = Square(eps=0.1, norm="linf", n_queries=500).attack(model, x, torch.zeros(len(x), dtype=torch.long))
    assert result.success.all()
    assert result.n_forward == len(x) * 3


def test_schedule_and_patterns_follow_the_reference():
    from pyautoattack.square import SquareAttack

    reference = SquareAttack(lambda x: x, norm="L2", eps=1.0, p_init=0.8, n_queries=10000, resc_schedule=False, device="cpu")
    assert all(window_fraction(0.8, i) == reference.p_selection(i) for i in range(10000))
    for side in range(1, 12):
        torch.manual_seed(0)
        theirs = reference.eta(side)  # the reference transposes its pattern at random
        ours = l2_window_pattern(side)
        assert min((theirs - ours).abs().max(), (theirs - ours.t()).abs().max()) < 1e-6


@pytest.mark.parametrize("field,value", [("n_queries", 1), ("n_queries", 2.5), ("p_init", 0.0), ("p_init", 1.5), ("eps", -0.1)])
def test_bad_parameters_are_one_line_errors(field, value):
    with pytest.raises(ValueError, match=field) as error:
        Square(**{field: value})
    assert "\n" not in str(error.value)


@pytest.mark.slow
@pytest.mark.parametrize("norm,eps,queries,seeds", [("linf", 0.1, 1000, 5), ("l2", 0.8, 3000, 3)])
def test_robust_accuracy_matches_the_reference(digits_mlp, norm, eps, queries, seeds):
    # All 1797 digits; ours counts the clean and starting evaluations the reference adds (queries + 2). One run's
    # robust accuracy is noisy, so the means over seeds are compared. Measured per-run spread on this model (1 and 2
    # threads alike): Linf at 1000 queries, seeds 0-4: ours sd 0.31 points, the reference's 0.21, means 68.02% and
    # 68.05%; L2 at 1000 queries the sd is 0.40 on both sides (20 and 10 seeds, means 46.04% and 45.97%), too noisy for
    # 0.5 points in minutes, so L2 runs 3000 queries: ours sd 0.14 (seeds 0-3, mean 43.59%), the reference's 0.24
    # (seeds 0-2, mean 43.35%). The sd of the difference of the means is then 0.17 (Linf, 5 seeds) and 0.16 (L2, 3).
    # The reference runs on chunks of 300 images: it draws one window position per batch, which correlates a batch's
    # images (unchunked its sd is 0.78 at 1000 queries and 0.61 at 3000).
    model, x, y = digits_mlp
    ours, theirs, our_runs, their_runs = mean_robust_accuracy(
        lambda seed: Square(eps=eps, norm=norm, n_queries=queries + 2, seed=seed).attack(model, x, y).robust,
        lambda seed: reference_square(model, x, y, eps, norm, queries, seed), seeds=seeds)
    assert abs(ours - theirs) <= 0.005, (our_runs, their_runs)
