"""certify(): soundness under random sampling, agreement with auto_LiRPA called directly, verified <= PGD <= clean."""

from __future__ import annotations

import pytest
import torch

from attacks.evasion.pgd import PGD
from defenses.certified import Certifier, certify
from defenses.certified.compat import lirpa
from secsuite.errors import ModelError
from secsuite.model import Classifier
from secsuite.zoo import build

EPS = {"linf": 0.02, "l2": 0.1}
SAMPLES = 600


def ball_samples(x: torch.Tensor, eps: float, norm: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """n points in the eps ball around one image (Linf: half at random vertices, clipped to [0,1]; L2: on the sphere)."""
    shape = (n, *x.shape)
    if norm == "linf":
        delta = (torch.rand(shape, generator=generator) * 2 - 1) * eps
        delta[: n // 2] = torch.sign(delta[: n // 2]) * eps  # vertices are where linear pieces peak
        return (x + delta).clamp(0, 1)
    direction = torch.randn(shape, generator=generator)
    direction = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    radius = eps * torch.rand(n, generator=generator).pow(0.1).view(-1, 1, 1, 1)
    return x + direction * radius


def margins(classifier: Classifier, x: torch.Tensor, y: int) -> torch.Tensor:
    with torch.no_grad():
        logits = classifier(x)
    others = [j for j in range(classifier.num_classes) if j != y]
    return logits[:, y : y + 1] - logits[:, others]


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("method", ["IBP", "CROWN-IBP", "CROWN"])
def test_margin_and_logit_bounds_hold_on_residual_bn(residual_bn, digits, method, norm):
    x, y = digits.test.x[:4], digits.test.y[:4]
    eps = EPS[norm]
    certifier = Certifier(residual_bn)
    result = certifier.certify(x, y, eps, method, norm)
    assert result.margin_lower.shape == (4, 9)
    # Logit bounds through the C specification: rows of I give lower bounds, rows of -I give minus the upper bounds.
    eye = torch.eye(10)
    both = certifier.bounds(x, eps, method, norm, C=torch.cat([eye, -eye]).expand(len(x), -1, -1))
    lower, upper = both[:, :10], -both[:, 10:]
    generator = torch.Generator().manual_seed(0)
    for i in range(len(x)):
        points = ball_samples(x[i], eps, norm, SAMPLES, generator)
        with torch.no_grad():
            logits = residual_bn(points)
        assert (logits >= lower[i] - 1e-4).all() and (logits <= upper[i] + 1e-4).all(), f"logit bound violated, example {i}"
        assert (margins(residual_bn, points, int(y[i])) >= result.margin_lower[i] - 1e-4).all(), f"margin bound violated, example {i}"
    assert torch.isfinite(lower).all() and torch.isfinite(upper).all()


ORDER = ("IBP", "CROWN-IBP", "CROWN", "alpha-CROWN")
ORDER_EPS = 0.05
# Least mean gain (margin lower bound, 4 digits, eps 0.05) of each method over the one before it on avg_cnn-like models.
# Measured over training seeds 0-2, 1 and 2 threads: CROWN-IBP - IBP 25.2-27.6, CROWN - CROWN-IBP 9.5-12.0,
# alpha-CROWN - CROWN 0.104-0.186 (alpha-CROWN improved every one of the 36 margins, by 0.019 at least).
# A method that silently computes the one before it gains 0. Bounds: about half the smallest measured gain.
MIN_MEAN_GAIN = {"CROWN-IBP": 12.0, "CROWN": 4.5, "alpha-CROWN": 0.05}


@pytest.fixture(scope="module")
def ordered_bounds(avg_cnn, digits) -> dict[str, torch.Tensor]:
    x, y = digits.test.x[:4], digits.test.y[:4]
    certifier = Certifier(avg_cnn)
    return {method: certifier.certify(x, y, ORDER_EPS, method).margin_lower for method in ORDER}


def test_each_method_is_strictly_tighter_than_the_one_before(ordered_bounds):
    for weaker, stronger in zip(ORDER, ORDER[1:]):
        gain = (ordered_bounds[stronger] - ordered_bounds[weaker]).mean().item()
        assert gain > MIN_MEAN_GAIN[stronger], f"{stronger} gains only {gain:.4f} over {weaker}"
    # alpha-CROWN starts from CROWN's slopes and keeps the best bound it reaches: never looser on any margin.
    assert (ordered_bounds["alpha-CROWN"] >= ordered_bounds["CROWN"] - 1e-5).all()


def pgd_margins(classifier: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 50) -> torch.Tensor:
    """(N, K-1): for each example and other class j (increasing order), the smallest f_y - f_j that signed-gradient
    descent on that margin finds in the Linf ball intersected with [0, 1]; an upper bound on the true minimum."""
    k = classifier.num_classes
    others = torch.arange(k).expand(len(y), -1)
    others = others[others != y.unsqueeze(1)].view(len(y), k - 1)
    xs, ys, js = x.repeat_interleave(k - 1, 0), y.repeat_interleave(k - 1), others.flatten()

    def margin(delta: torch.Tensor) -> torch.Tensor:
        logits = classifier((xs + delta).clamp(0, 1))
        return logits.gather(1, ys[:, None]).squeeze(1) - logits.gather(1, js[:, None]).squeeze(1)

    delta = torch.zeros_like(xs)
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(margin(delta).sum(), delta)
        delta = (delta - eps / 10 * grad.sign()).clamp(-eps, eps).detach()
    with torch.no_grad():
        return margin(delta).view(len(y), k - 1)


def test_every_bound_is_below_the_margins_pgd_reaches(avg_cnn, digits, ordered_bounds):
    x, y = digits.test.x[:4], digits.test.y[:4]
    attacked = pgd_margins(avg_cnn, x, y, ORDER_EPS)
    clean = pgd_margins(avg_cnn, x, y, ORDER_EPS, steps=0)
    assert (attacked < clean - 0.1).all(), "the attack should lower every margin; otherwise this test checks nothing"
    for method, lower in ordered_bounds.items():
        assert (lower <= attacked + 1e-4).all(), f"{method} bound above a margin PGD reached"


@pytest.mark.parametrize("method", ["IBP", "CROWN-IBP", "CROWN"])
def test_agrees_with_auto_lirpa_called_directly(avg_cnn, digits, method):
    x, y = digits.test.x[:8], digits.test.y[:8]
    ours = certify(avg_cnn, x, y, 0.02, method).margin_lower
    # Direct use as in auto_LiRPA's examples: the classifier itself (normalisation as a division), matrix mode,
    # C built by hand.
    L = lirpa()
    bounded = L.BoundedModule(avg_cnn, torch.zeros(1, 1, 8, 8), bound_opts={"conv_mode": "matrix"})
    C = torch.zeros(len(y), 9, 10)
    for i, label in enumerate(y.tolist()):
        others = [j for j in range(10) if j != label]
        C[i, :, label] = 1
        C[i, torch.arange(9), others] = -1
    ptb = L.PerturbationLpNorm(norm=float("inf"), eps=0.02, x_L=(x - 0.02).clamp(0, 1), x_U=(x + 0.02).clamp(0, 1))
    direct, _ = bounded.compute_bounds(x=(L.BoundedTensor(x, ptb),), C=C, method=method)
    torch.testing.assert_close(ours, direct.detach(), rtol=1e-4, atol=1e-4)


def test_verified_within_pgd_robust_within_clean(avg_cnn, digits):
    x, y = digits.test.x[:64], digits.test.y[:64]
    eps = 0.03
    correct = avg_cnn.predict(x) == y
    robust = PGD(eps=eps, norm="linf", steps=20, seed=0).attack(avg_cnn, x, y).robust
    for method in ("IBP", "CROWN-IBP", "CROWN"):
        verified = certify(avg_cnn, x, y, eps, method).verified
        assert not (verified & ~robust).any(), f"{method} verified an example PGD broke"
        assert verified.float().mean() <= robust.float().mean() <= correct.float().mean()
    assert verified.any(), "CROWN should verify some digits at eps 0.03; otherwise this test checks nothing"


def test_vit_gelu_is_a_one_line_model_error():
    torch.manual_seed(0)
    vit = Classifier(build("vit_small", 10, (1, 8, 8), depth=1, dim=16, heads=2), 10, (1, 8, 8), name="vit").eval()
    with pytest.raises(ModelError) as info:
        certify(vit, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), 0.01, "IBP")
    message = str(info.value)
    assert "\n" not in message and "onnx::Erf" in message and "GELU" in message and "net.blocks.0.mlp.1" in message


def test_vit_relu_batch_dependent_expand_is_a_model_error():
    torch.manual_seed(0)
    vit = Classifier(build("vit_small", 10, (1, 8, 8), depth=1, dim=16, heads=2, activation="relu"), 10, (1, 8, 8), name="vit").eval()
    with pytest.raises(ModelError, match="cannot bound layer BoundEqual") as info:
        certify(vit, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), 0.01, "IBP")
    assert "\n" not in str(info.value)


def test_alpha_crown_through_max_pool_is_a_model_error(digits):
    torch.manual_seed(0)
    classifier = Classifier(build("small_cnn", 10, (1, 8, 8), width=4), 10, (1, 8, 8), name="maxpool_cnn").eval()
    with pytest.raises(ModelError, match="BoundMaxPool"):
        certify(classifier, digits.test.x[:2], digits.test.y[:2], 0.01, "alpha-CROWN")


@pytest.mark.parametrize("kwargs, field", [({"method": "PGD"}, "method"), ({"norm": "l1"}, "norm"), ({"eps": -0.1}, "eps")])
def test_invalid_arguments_name_the_parameter(avg_cnn, digits, kwargs, field):
    arguments = {"eps": 0.01, "method": "IBP", "norm": "linf", **kwargs}
    with pytest.raises(ValueError, match=field):
        certify(avg_cnn, digits.test.x[:2], digits.test.y[:2], **arguments)
