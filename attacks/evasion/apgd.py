"""Auto-PGD (Croce & Hein 2020): PGD with momentum and a step size that halves itself, on CE or DLR.

The budget is the number of iterations alone. The step starts at 2*eps; at checkpoints
w_j = ceil(p_j * steps) (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)) an
example halves its step and restarts from its best point when (1) its objective rose in fewer than
rho = 75% of the iterations since the last checkpoint, or (2) its step was not halved at the last
checkpoint and its best objective has not improved since. Each iterate mixes the projected step with
the previous move (momentum 0.75). DLR, -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3), is invariant to
shifting and scaling the logits, so it still has a gradient where cross-entropy saturates (defensive
distillation); the targeted DLR divides by z_pi1 - (z_pi3 + z_pi4)/2. Restarts run only on the
examples no earlier run has broken. An example keeps the first iterate that reached the goal.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from attacks.evasion.base import Attack, check_positive, check_positive_int, l2_normalize, project
from secsuite.model import Classifier

LOSSES = ("ce", "dlr")


def checkpoints(steps: int) -> list[int]:
    """The iterations after which the step-size conditions are checked."""
    fractions = [0.0, 0.22]
    while fractions[-1] < 1:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    marks = {math.ceil(round(p * steps, 9)) for p in fractions[1:]}  # round: 0.22 * 100 is 22.000000000000004
    return sorted(mark for mark in marks if 0 < mark <= steps)


def halving_due(rises: torch.Tensor, iterations: int, rho: float, halved_last: torch.Tensor, best_value: torch.Tensor,
                best_at_last: torch.Tensor) -> torch.Tensor:
    """Per example, whether a checkpoint halves the step: (1) the objective rose in fewer than rho of the
    `iterations` since the last checkpoint, or (2) the step was not halved at the last checkpoint and the
    best objective has not improved since."""
    return (rises < rho * iterations) | (~halved_last & (best_value <= best_at_last))


class APGD(Attack):
    name = "apgd"

    def __init__(self, eps: float = 0.1, norm: str = "linf", steps: int = 100, loss: str = "ce", restarts: int = 1,
                 rho: float = 0.75, momentum: float = 0.75, targeted: bool = False, seed: int = 0):
        super().__init__(eps, norm, targeted, seed)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        for name, value in (("rho", rho), ("momentum", momentum)):
            check_positive(name, value)
            if value > 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        self.steps, self.restarts = check_positive_int("steps", steps), check_positive_int("restarts", restarts)
        self.loss, self.rho, self.momentum = loss, float(rho), float(momentum)

    def _objective(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Per example, the value the attacker maximises: the targeted loss whenever a target is given (APGD-T
        ascends it while counting any misclassification as success)."""
        if self.loss == "ce":
            return -F.cross_entropy(logits, target, reduction="none") if target is not None else F.cross_entropy(logits, y, reduction="none")
        ranked = logits.sort(dim=1, descending=True).values
        true_logit = logits.gather(1, y[:, None]).squeeze(1)
        if target is not None:
            return -(true_logit - logits.gather(1, target[:, None]).squeeze(1)) / (ranked[:, 0] - (ranked[:, 2] + ranked[:, 3]) / 2 + 1e-12)
        best_other = logits.scatter(1, y[:, None], -float("inf")).amax(1)
        return -(true_logit - best_other) / (ranked[:, 0] - ranked[:, 2] + 1e-12)

    def _value_and_grad(self, classifier: Classifier, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None):
        x_adv = x_adv.detach().requires_grad_(True)
        logits = classifier(x_adv)
        values = self._objective(logits, y, target)
        (grad,) = torch.autograd.grad(values.sum(), x_adv)
        return values.detach(), grad, logits.detach()

    def _start(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) * 2 - 1
        if self.norm == "linf":
            direction = noise / noise.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        else:
            direction = l2_normalize(noise)
        return (x + self.eps * direction).clamp(0, 1)

    def _one_run(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, generator: torch.Generator):
        """One APGD run; returns the result and which examples reached the goal."""
        shape = (-1, *[1] * (x.dim() - 1))
        labels = target if self.targeted else y
        x_adv = self._start(x, generator) if self.eps > 0 else x.clone()
        value, grad, logits = self._value_and_grad(classifier, x_adv, y, target)
        best_x, best_value, best_grad = x_adv.clone(), value.clone(), grad.clone()
        best_previous = x_adv.clone()  # the iterate before best_x: a restart from best_x keeps its momentum
        done = self.reached_goal(logits, labels)
        first_adv = x_adv.clone()
        step = torch.full((x.shape[0],), 2 * self.eps, device=x.device, dtype=x.dtype)
        x_previous = x_adv.clone()
        rises = torch.zeros_like(step)
        halved_last, best_at_last = torch.zeros_like(done), best_value.clone()
        last_check, check_at = 0, set(checkpoints(self.steps))
        for iteration in range(1, self.steps + 1):
            direction = grad.sign() if self.norm == "linf" else l2_normalize(grad)
            z = project(x_adv + step.view(shape) * direction, x, self.eps, self.norm)
            mix = self.momentum if iteration > 1 else 1.0
            x_next = project(x_adv + mix * (z - x_adv) + (1 - mix) * (x_adv - x_previous), x, self.eps, self.norm)
            x_previous, x_adv = x_adv, x_next
            new_value, grad, logits = self._value_and_grad(classifier, x_adv, y, target)
            newly = self.reached_goal(logits, labels) & ~done
            first_adv[newly], done = x_adv[newly], done | newly
            rises += (new_value > value).to(rises.dtype)
            value = new_value
            improved = value > best_value
            best_x[improved], best_value[improved], best_grad[improved] = x_adv[improved], value[improved], grad[improved]
            best_previous[improved] = x_previous[improved]
            if iteration in check_at:
                halve = halving_due(rises, iteration - last_check, self.rho, halved_last, best_value, best_at_last)
                step = torch.where(halve, step / 2, step)
                x_adv[halve], grad[halve], x_previous[halve] = best_x[halve], best_grad[halve], best_previous[halve]
                halved_last, best_at_last, last_check = halve, best_value.clone(), iteration
                rises.zero_()
        return torch.where(done.view(shape), first_adv, best_x), done

    def _perturb(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        needed = 4 if self.targeted else 3  # DLR's denominator reads the third (targeted: fourth) largest logit
        if self.loss == "dlr" and classifier.num_classes < needed:
            raise ValueError(f"loss 'dlr'{' (targeted)' if self.targeted else ''} needs at least {needed} classes, the model has {classifier.num_classes}")
        generator = torch.Generator().manual_seed(self.seed)
        result, done = self._one_run(classifier, x, y, target, generator)
        for _ in range(self.restarts - 1):
            remaining = (~done).nonzero().squeeze(1)
            if not len(remaining):
                break
            again, again_done = self._one_run(classifier, x[remaining], y[remaining],
                                              None if target is None else target[remaining], generator)
            result[remaining[again_done]] = again[again_done]
            done[remaining[again_done]] = True
        return result
