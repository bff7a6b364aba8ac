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


def test_alpha_crown_sound_and_at_least_as_tight_as_crown(avg_cnn, digits):
    x, y = digits.test.x[:3], digits.test.y[:3]
    crown = certify(avg_cnn, x, y, 0.02, "CROWN")
    alpha = certify(avg_cnn, x, y, 0.02, "alpha-CROWN")
    generator = torch.Generator().manual_seed(1)
    for i in range(len(x)):
        points = ball_samples(x[i], 0.02, "linf", SAMPLES, generator)
        assert (margins(avg_cnn, points, int(y[i])) >= alpha.margin_lower[i] - 1e-4).all()
    assert (alpha.margin_lower >= crown.margin_lower - 1e-3).all()


def test_tighter_methods_are_tighter(residual_bn, digits):
    x, y = digits.test.x[:16], digits.test.y[:16]
    ibp, crown = (certify(residual_bn, x, y, 0.01, m).margin_lower for m in ("IBP", "CROWN"))
    assert crown.mean() > ibp.mean()


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
