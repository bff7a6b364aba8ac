"""PGD (Madry et al. 2018): random start in the eps ball, then projected sign (Linf) or normalised (L2) steps."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from attacks.evasion.base import Attack, check_positive, check_positive_int, l2_normalize, project
from secsuite.model import Classifier


class PGD(Attack):
    name = "pgd"

    def __init__(self, eps: float = 0.1, norm: str = "linf", steps: int = 10, step_size: float | None = None,
                 random_start: bool = True, restarts: int = 1, targeted: bool = False, seed: int = 0):
        super().__init__(eps, norm, targeted, seed)
        if step_size is not None:
            check_positive("step_size", step_size)
        self.steps, self.restarts = check_positive_int("steps", steps), check_positive_int("restarts", restarts)
        self.random_start = bool(random_start)
        # Madry et al.'s robustness library default: 2.5 * eps / steps (2/255 for 8/255 and 10 steps).
        self.step_size = float(step_size) if step_size is not None else 2.5 * self.eps / self.steps

    def _random_start(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.norm == "linf":
            noise = (torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1) * self.eps
        else:
            direction = l2_normalize(torch.randn(x.shape, generator=generator, dtype=x.dtype))
            radius = torch.rand((x.shape[0],), generator=generator, dtype=x.dtype) * self.eps
            noise = direction * radius.view(-1, *[1] * (x.dim() - 1))
        return (x + noise.to(x.device)).clamp(0, 1)

    def _one_run(self, classifier: Classifier, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Projected steps; an example keeps the first iterate that reached the goal (read off the logits the
        gradient pass computes anyway), so a later step that drifts back cannot undo a success."""
        x_adv = self._random_start(x, generator) if self.random_start and self.eps > 0 else x.clone()
        best = x_adv.clone()
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.steps):
            grad, logits = self.loss_gradient(classifier, x_adv, labels)
            newly = self.reached_goal(logits, labels) & ~done
            best[newly] = x_adv[newly]
            done |= newly
            step = grad.sign() if self.norm == "linf" else l2_normalize(grad)
            x_adv = project(x_adv + self.step_size * step, x, self.eps, self.norm)
        return torch.where(done.view(-1, *[1] * (x.dim() - 1)), best, x_adv)

    def _perturb(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        labels = target if self.targeted else y
        generator = torch.Generator().manual_seed(self.seed)
        best = self._one_run(classifier, x, labels, generator)
        if self.restarts == 1:
            return best
        with torch.no_grad():
            logits = classifier(best)
        best_loss, best_reached = F.cross_entropy(logits, labels, reduction="none"), self.reached_goal(logits, labels)
        for _ in range(self.restarts - 1):
            candidate = self._one_run(classifier, x, labels, generator)
            with torch.no_grad():
                logits = classifier(candidate)
            loss, reached = F.cross_entropy(logits, labels, reduction="none"), self.reached_goal(logits, labels)
            # A run that reached the goal beats one that did not, so a restart never undoes a success; between
            # equals, untargeted keeps the highest loss, targeted the lowest (closest to the target).
            closer = loss < best_loss if self.targeted else loss > best_loss
            better = (reached & ~best_reached) | ((reached == best_reached) & closer)
            best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), candidate, best)
            best_loss, best_reached = torch.where(better, loss, best_loss), best_reached | reached
        return best
