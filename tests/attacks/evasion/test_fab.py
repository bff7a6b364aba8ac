"""FAB and FAB-T: the projection onto hyperplane and box against the reference's, the first step landing on the
boundary of an affine model, and the same broken images as pyautoattack's FAB (deterministic without restarts)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.evasion import FAB
from attacks.evasion.fab import boundary_step
from secsuite.model import Classifier
from tests.attacks.evasion.reference import digits_mlp, reference_fab  # noqa: F401


def _hyperplanes(dimension: int, rows: int, seed: int):
    """Points in the box, hyperplanes with some zero weights, offsets from reachable to out of the box's reach."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(rows, dimension, generator=generator)
    w = torch.randn(rows, dimension, generator=generator) * (torch.rand(rows, dimension, generator=generator) > 0.2)
    b = (w * torch.rand(rows, dimension, generator=generator)).sum(1) * 3 * torch.rand(rows, generator=generator)
    return points, w, b


@pytest.mark.parametrize("dimension", [5, 64, 784])
def test_boundary_step_equals_the_reference_projection(dimension):
    from pyautoattack.fab_projections import projection_l2, projection_linf

    # Largest difference measured over seeds 0-4: 1.4e-5 (L2, 5 dimensions), else below 1e-6.
    for seed in range(3):
        points, w, b = _hyperplanes(dimension, 200, seed)
        for norm, reference in (("linf", projection_linf), ("l2", projection_l2)):
            ours = boundary_step(points, w, b, norm)
            theirs = reference(points.clone(), w.clone(), b.clone())
            assert (ours - theirs).abs().max() < 1e-4, (norm, seed)
            assert ((points + ours) >= -1e-6).all() and ((points + ours) <= 1 + 1e-6).all()


class _Affine(nn.Module):
    """Two classes, z_0 - z_1 = <w, x> - b."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.register_buffer("w", w)
        self.b = b

    def forward(self, x):
        margin = x.flatten(1) @ self.w - self.b
        return torch.stack([margin, torch.zeros_like(margin)], 1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_first_step_lands_past_the_boundary_inside_the_box(norm):
    # On an affine model the linearisation is exact: from x the first step is the smallest step (within the box) to
    # the boundary, overshot by eta = 1.05. Images near the box's corners make the box bind for many pixels.
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(64, generator=generator)
    x = torch.where(torch.rand(32, 1, 8, 8, generator=generator) > 0.5, 0.97, 0.03)
    b = ((x.flatten(1) @ w).min() - 1.0).item()  # every image correct (margin > 0)
    model = Classifier(_Affine(w, b), 2, (1, 8, 8)).eval()
    result = FAB(eps=100.0, norm=norm, steps=1).attack(model, x, torch.zeros(32, dtype=torch.long))
    from pyautoattack.fab_projections import projection_l2, projection_linf

    projection = projection_linf if norm == "linf" else projection_l2
    step = projection(x.flatten(1), w.expand(32, -1).clone(), torch.full((32,), b))
    expected = (x.flatten(1) + 1.05 * step).clamp(0, 1).view_as(x)
    assert result.success.all()
    assert (result.x_adv - expected).abs().max() < 1e-5


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
@pytest.mark.parametrize("target_classes", [9, 0])
def test_breaks_the_same_images_as_the_reference(digits_mlp, norm, eps, target_classes):
    # Without restarts both are deterministic: measured identical robust flags here, and on all 359 test digits with
    # the CNN at 20 steps (FAB-T, both norms; 1 and 2 threads).
    model, x, y = digits_mlp
    x, y = x[:200], y[:200]
    ours = FAB(eps=eps, norm=norm, steps=10, target_classes=target_classes).attack(model, x, y)
    theirs = reference_fab(model, x, y, eps, norm, steps=10, target_classes=target_classes)
    assert torch.equal(ours.robust, theirs)
    assert ours.robust.float().mean() < model.accuracy(x, y) - 0.1  # it breaks images at all
    assert ours.norms(norm).max() <= eps * (1 + 1e-5)


@pytest.mark.parametrize("field,value", [("steps", 0), ("restarts", 0), ("target_classes", -1), ("target_classes", 1.5),
                                         ("alpha_max", 0.0), ("alpha_max", 2.0), ("beta", 1.5), ("eta", 0.0), ("targeted", True)])
def test_bad_parameters_are_one_line_errors(field, value):
    with pytest.raises(ValueError, match=field) as error:
        FAB(**{field: value})
    assert "\n" not in str(error.value)


@pytest.mark.slow
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
def test_fab_t_robust_accuracy_equals_the_reference(digits_model, digits, norm, eps):
    # All 359 test digits, 20 steps: measured identical robust flags (64.62% Linf, 15.04% L2; 1 and 2 threads).
    x, y = digits.test.x, digits.test.y
    ours = FAB(eps=eps, norm=norm, steps=20, target_classes=9).attack(digits_model, x, y).robust
    theirs = reference_fab(digits_model, x, y, eps, norm, steps=20, target_classes=9)
    assert abs(ours.float().mean() - theirs.float().mean()) <= 0.005
    assert (ours != theirs).sum() <= 1
