"""FAB, the Fast Adaptive Boundary attack (Croce & Hein 2020), as AutoAttack runs it; Linf and L2.

Each iteration linearises the boundary between the true class y and a class c at the iterate x_k, the hyperplane
z_c - z_y + <grad(z_c - z_y), z - x_k> = 0, and projects both x_k and the original image x onto it within the box
[0,1] (the smallest step in the attack's norm). The next iterate mixes the two projections, each extrapolated by
eta = 1.05: x_{k+1} = (1 - a)(x_k + eta d_k) + a (x + eta d_0) with a = min(|d_k| / (|d_k| + |d_0|), alpha_max = 0.1),
so it moves to the boundary while staying close to x. A misclassified iterate is kept when it is the closest so far
and then pulled back towards x by beta = 0.9. Untargeted FAB takes the class whose linearised boundary is closest;
FAB-T (`target_classes = k`) runs once per each of the k classes the model ranks highest after y at x, each run only
on the images no earlier run broke. The first run starts at x, later restarts at a random point at distance eps/2.

An image is broken once an adversarial point within eps is found, and it then leaves the batch: the reference keeps
iterating to shrink the norm further, which never changes which images are broken.
"""

from __future__ import annotations

import torch

from attacks.evasion.base import Attack, check_positive, check_positive_int, perturbation_norm
from secsuite.model import Classifier

NO_WEIGHT = 1e-8  # |w_i| below this counts as zero in the L2 projection (as in the reference)


def water_level(rate: torch.Tensor, cap: torch.Tensor, needed: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest level t >= 0 with sum_i rate_i * min(t, cap_i) >= needed (rate, cap >= 0);
    +inf where even t = max(cap) falls short."""
    order = cap.argsort(1)
    cap, rate = cap.gather(1, order), rate.gather(1, order)
    spent = (rate * cap).cumsum(1)  # sum over the coordinates already capped at level cap_k
    remaining = (rate.sum(1, keepdim=True) - rate.cumsum(1)).clamp_min(0)  # rate still growing after cap_k
    first = ((spent + cap * remaining) < needed[:, None]).sum(1, keepdim=True)  # first k whose level suffices
    feasible = first.squeeze(1) < cap.shape[1]
    first = first.clamp_max(cap.shape[1] - 1)
    spent_before = torch.where(first > 0, spent.gather(1, (first - 1).clamp_min(0)), torch.zeros_like(needed[:, None]))
    growing = (remaining.gather(1, first) + rate.gather(1, first)).squeeze(1)
    level = ((needed - spent_before.squeeze(1)) / torch.where(growing > 0, growing, torch.ones_like(growing))).clamp_min(0)
    return torch.where(feasible, level, torch.full_like(level, float("inf")))


def boundary_step(points: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """Per row (points, w: (N, D); b: (N,)), the smallest step d in `norm` with <w, points + d> = b and
    points + d in [0, 1]^D; where no point of the box reaches the hyperplane, the step to the box corner closest to it."""
    residual = (w * points).sum(1) - b
    w = torch.where(residual >= 0, 1.0, -1.0)[:, None] * w  # now <w, points + d> must fall by |residual|
    room = torch.where(w > 0, points, 1 - points)  # how far each coordinate can move against w inside the box
    if norm == "linf":
        # every coordinate moves by min(t, room_i) against sign(w_i): the decrease is sum |w_i| min(t, room_i)
        active = w != 0
        rate, cap = w.abs(), torch.where(active, room, torch.zeros_like(room))
        level = water_level(rate, cap, residual.abs())
        return torch.where(active, -w.sign() * torch.minimum(level[:, None], cap), torch.zeros_like(w))
    # L2: d = -t w, each coordinate stopped at the box: the decrease is sum w_i^2 min(t, room_i / |w_i|)
    active = w.abs() >= NO_WEIGHT
    safe_w = torch.where(active, w, torch.ones_like(w))
    cap = torch.where(active, room / safe_w.abs(), torch.zeros_like(room))
    level = water_level(torch.where(active, w * w, torch.zeros_like(w)), cap, residual.abs())
    return torch.where(active, -w * torch.minimum(level[:, None], cap), torch.zeros_like(w))


def ranked_other_classes(logits: torch.Tensor, count: int) -> list[torch.Tensor]:
    """Per image, the classes the model ranks 2nd, 3rd, ... (`count` of them, at most all the other classes)."""
    ranking = logits.argsort(1, descending=True)
    return [ranking[:, rank] for rank in range(1, min(count, logits.shape[1] - 1) + 1)]


class FAB(Attack):
    name = "fab"

    def __init__(self, eps: float = 0.1, norm: str = "linf", steps: int = 100, restarts: int = 1, target_classes: int = 0,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, targeted: bool = False, seed: int = 0):
        super().__init__(eps, norm, targeted, seed)
        if self.targeted:
            raise ValueError("targeted must be false: FAB-T picks its own target classes (set target_classes)")
        self.steps, self.restarts = check_positive_int("steps", steps), check_positive_int("restarts", restarts)
        if int(target_classes) != target_classes or target_classes < 0:
            raise ValueError(f"target_classes must be an integer >= 0 (0: untargeted FAB), got {target_classes}")
        self.target_classes = int(target_classes)
        for name, value in (("alpha_max", alpha_max), ("beta", beta)):
            check_positive(name, value)
            if value > 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        check_positive("eta", eta)
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)

    def _linearisation(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None):
        """Per image, the value f = z_c - z_y and gradient of the boundary to step to: toward `target`, or (untargeted)
        toward the class whose linearised boundary is closest in the attack's norm."""
        x = x.detach().requires_grad_(True)
        logits = classifier(x)
        rows = torch.arange(len(x), device=x.device)
        if target is not None:
            difference = logits[rows, target] - logits[rows, y]
            (grad,) = torch.autograd.grad(difference.sum(), x)
            return difference.detach(), grad.flatten(1)
        jacobian = torch.stack([torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k < logits.shape[1] - 1)[0].flatten(1)
                                for k in range(logits.shape[1])], 1)
        differences = (logits - logits[rows, y][:, None]).detach()
        gradients = jacobian - jacobian[rows, y][:, None]
        dual = gradients.abs().sum(2) if self.norm == "linf" else gradients.norm(dim=2)
        distance = differences.abs() / (dual + 1e-12)
        distance[rows, y] = float("inf")
        closest = distance.argmin(1)
        return differences[rows, closest], gradients[rows, closest]

    def _start(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
        else:
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        noise = noise.to(x.device)
        scale = perturbation_norm(noise, self.norm).view(-1, *[1] * (x.dim() - 1))
        return (x + self.eps / 2 * noise / scale).clamp(0, 1)

    def _one_run(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                 x_start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One FAB run from `x_start`; returns the adversarial points found within eps and which images they broke."""
        shape = (-1, *[1] * (x.dim() - 1))
        found, broken = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
        index = torch.arange(len(x), device=x.device)  # original rows still iterating
        origin, current, best_norm = x.flatten(1), x_start, torch.full((len(x),), float("inf"), device=x.device)
        for _ in range(self.steps):
            value, w = self._linearisation(classifier, current, y[index], None if target is None else target[index])
            flat = current.flatten(1)
            b = (w * flat).sum(1) - value
            steps = boundary_step(torch.cat([flat, origin]), torch.cat([w, w]), torch.cat([b, b]), self.norm)
            from_current, from_origin = steps[: len(flat)], steps[len(flat):]
            size_current = perturbation_norm(from_current, self.norm).clamp_min(1e-8)
            size_origin = perturbation_norm(from_origin, self.norm).clamp_min(1e-8)
            alpha = (size_current / (size_current + size_origin)).clamp(0, self.alpha_max)[:, None]
            flat = ((flat + self.eta * from_current) * (1 - alpha) + (origin + self.eta * from_origin) * alpha).clamp(0, 1)
            current = flat.view_as(current)
            with torch.no_grad():
                adversarial = classifier(current).argmax(1) != y[index]
            distance = perturbation_norm(flat - origin, self.norm)
            closer = adversarial & (distance < best_norm)
            best_norm = torch.where(closer, distance, best_norm)
            found[index[closer]] = current[closer].detach()
            current = torch.where(adversarial.view(shape), (origin + (flat - origin) * self.beta).view_as(current), current)
            done = best_norm <= self.eps
            if done.any():
                broken[index[done]] = True
                keep = ~done
                index, origin, current, best_norm = index[keep], origin[keep], current[keep], best_norm[keep]
                if not len(index):
                    break
        return found, broken

    def _perturb(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            logits = classifier(x)
        result = x.clone()
        robust = logits.argmax(1) == y
        for target_class in ranked_other_classes(logits, self.target_classes) if self.target_classes else [None]:
            for restart in range(self.restarts):
                remaining = robust.nonzero().squeeze(1)
                if not len(remaining):
                    return result
                x_r = x[remaining]
                start = self._start(x_r, generator) if restart > 0 else x_r
                found, broken = self._one_run(classifier, x_r, y[remaining], None if target_class is None else target_class[remaining], start)
                result[remaining[broken]] = found[broken]
                robust[remaining[broken]] = False
        return result
