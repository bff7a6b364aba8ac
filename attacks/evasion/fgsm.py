"""FGSM (Goodfellow et al. 2015): one signed (Linf) or normalised (L2) gradient step of size eps."""

from __future__ import annotations

import torch

from attacks.evasion.base import Attack, l2_normalize
from secsuite.model import Classifier


class FGSM(Attack):
    name = "fgsm"

    def _perturb(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        grad, _ = self.loss_gradient(classifier, x, target if self.targeted else y)
        step = grad.sign() if self.norm == "linf" else l2_normalize(grad)
        return (x + self.eps * step).clamp(0, 1)
