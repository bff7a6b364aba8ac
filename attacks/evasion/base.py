"""Base class and result type shared by every evasion attack."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from secsuite.model import Classifier, evaluation_mode, output_classes

NORMS = ("linf", "l2")


@dataclass
class AttackResult:
    """Adversarial examples for one batch. `success` means the attacker's goal holds on `x_adv`."""

    x_adv: torch.Tensor
    success: torch.Tensor  # bool (N,)
    robust: torch.Tensor  # bool (N,): x_adv still classified as the true label
    linf: torch.Tensor  # (N,) perturbation norms
    l2: torch.Tensor
    n_forward: int
    n_backward: int
    time_s: float

    def norms(self, norm: str) -> torch.Tensor:
        return self.linf if norm == "linf" else self.l2


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def l2_normalize(g: torch.Tensor) -> torch.Tensor:
    """Per-example unit L2 direction; a zero gradient stays zero (as in ART), never NaN."""
    norm = g.flatten(1).norm(dim=1).view(-1, *[1] * (g.dim() - 1))
    return g / torch.where(norm > 0, norm, torch.full_like(norm, float("inf")))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project onto the eps ball around x (in `norm`) intersected with [0,1]."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        scale = (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * scale.view(-1, *[1] * (delta.dim() - 1))
    return (x + delta).clamp(0, 1)


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok or value != value:
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def check_positive_int(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


class Attack:
    """An evasion attack in [0,1] pixel space. Subclasses implement `_perturb`.

    `minimum_norm` attacks (Carlini-Wagner) look for the smallest perturbation instead of the
    worst one inside a ball; one run is evaluated at every eps of the threat model.
    """

    name = "attack"
    minimum_norm = False

    def __init__(self, eps: float = 0.1, norm: str = "linf", targeted: bool = False, seed: int = 0):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        check_positive("eps", eps, allow_zero=True)
        self.eps, self.norm, self.targeted, self.seed = float(eps), norm, bool(targeted), int(seed)

    def _perturb(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def random_targets(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + 1)
        offset = torch.randint(1, num_classes, y.shape, generator=generator).to(y.device)
        return (y + offset) % num_classes

    def __call__(self, model: Classifier | nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """The adversarial images, torchattacks-style: `PGD(eps=8 / 255)(model, x, y)`."""
        return self.attack(model, x, y, target).x_adv

    def attack(self, classifier: Classifier | nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> AttackResult:
        """Attack (x, y); targeted attacks use `target` or, if None, a seeded random other class.

        `classifier` may be a plain nn.Module taking [0,1] images: it is wrapped in a Classifier whose
        num_classes is its output width. The model runs in eval mode and is left in the mode it came in."""
        if not isinstance(classifier, Classifier):
            classifier = Classifier(classifier, output_classes(classifier, x[:1]), tuple(x.shape[1:]), name=type(classifier).__name__)
        x, y = x.to(classifier.device), y.to(classifier.device)
        classifier.check_inputs(x, y)
        if self.targeted:
            target = self.random_targets(y, classifier.num_classes) if target is None else target.to(y.device)
            classifier.check_inputs(x, target)
        forward0, backward0 = classifier.counters()
        start = time.perf_counter()
        with evaluation_mode(classifier):
            x_adv = self._perturb(classifier, x, y, target if self.targeted else None).detach()
            with torch.no_grad():
                pred = classifier(x_adv).argmax(1)
        elapsed = time.perf_counter() - start
        success = (pred == target) if self.targeted else (pred != y)
        delta = x_adv - x
        return AttackResult(
            x_adv=x_adv, success=success, robust=pred == y,
            linf=perturbation_norm(delta, "linf"), l2=perturbation_norm(delta, "l2"),
            n_forward=classifier.n_forward - forward0, n_backward=classifier.n_backward - backward0, time_s=elapsed,
        )

    def loss_gradient(self, classifier: Classifier, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of the summed cross-entropy w.r.t. the input (negated for targeted attacks, which
        descend it) and the logits of that same forward pass."""
        x = x.detach().requires_grad_(True)
        logits = classifier(x)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels, reduction="sum"), x)
        return (-grad if self.targeted else grad), logits.detach()

    def reached_goal(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per example: the attacker's goal holds (targeted: the target is predicted; untargeted: the label is not)."""
        hit = logits.argmax(1) == labels
        return hit if self.targeted else ~hit

    def params(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}
