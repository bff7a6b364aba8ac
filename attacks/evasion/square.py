"""Square Attack (Andriushchenko et al. 2020) as AutoAttack runs it (Croce & Hein 2020): score-based random search.

Only the model's logits are read, never a gradient. Each query proposes a change of one square window of the
perturbation and keeps it only if the loss decreases or the image becomes misclassified; the loss is the margin
z_y - max_{i!=y} z_i (targeted: cross-entropy towards the target). The window covers a fraction p of the pixels:
p_init at first, halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 (AutoAttack's absolute
schedule). Linf starts from vertical stripes of +-eps and sets a window to x +- eps (one sign per channel), so the
perturbation stays on the ball's vertices. L2 starts from tiles of signed centred-square patterns; a proposal moves
the mass of a second window into the first, adds a fresh pattern there and uses any norm left to eps.

Window positions and signs are drawn per image (the reference draws one position per batch). Like the reference,
a window never starts at the last free row or column unless it spans the image: the numbers stay comparable to
AutoAttack's (on 8x8 digits, also drawing those positions makes the attack about 5 points stronger at 300 queries).
`n_queries` is the number of model evaluations spent on an image, its clean evaluation and the starting point
included (the reference spends n_queries + 2); an image stops being queried once it is misclassified (targeted:
once the target is predicted).
"""

from __future__ import annotations

import functools
import math

import torch
from torch.nn import functional as F

from attacks.evasion.base import Attack, check_positive, check_positive_int, l2_normalize
from secsuite.model import Classifier

# (last iteration, fraction of p_init) of AutoAttack's schedule; later iterations use 1/512.
P_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def window_fraction(p_init: float, iteration: int) -> float:
    """The fraction p of the image's pixels that the window at `iteration` (from 0) covers."""
    for last, divisor in P_SCHEDULE:
        if iteration <= last:
            return p_init / divisor
    return p_init / 512


def square_pattern(rows: int, cols: int) -> torch.Tensor:
    """Unit-L2 (rows, cols) pattern of nested rectangles around the centre; ring k (Chebyshev distance) weighs
    sum_{j>=k} 1/(j+1)^2, so the mass concentrates at the centre."""
    if rows == 0:
        return torch.zeros(0, cols)
    rings = torch.arange(max(rows // 2, cols // 2) + 1, dtype=torch.float64)
    weight_from = (1 / (rings + 1) ** 2).flip(0).cumsum(0).flip(0)
    distance = torch.maximum((torch.arange(rows)[:, None] - rows // 2).abs(), (torch.arange(cols)[None, :] - cols // 2).abs())
    pattern = weight_from[distance]
    return (pattern / pattern.norm()).float()


def window_mask(top: torch.Tensor, left: torch.Tensor, side: int, height: int, width: int) -> torch.Tensor:
    """(N, 1, height, width) mask of each image's side x side window at (top, left)."""
    rows = torch.arange(height, device=top.device) - top[:, None]
    cols = torch.arange(width, device=left.device) - left[:, None]
    return (((rows >= 0) & (rows < side))[:, :, None] & ((cols >= 0) & (cols < side))[:, None, :])[:, None]


@functools.lru_cache(maxsize=64)
def l2_window_pattern(side: int) -> torch.Tensor:
    """The L2 proposal shape: a positive pattern over the top half and a negative one over the bottom, unit norm."""
    pattern = torch.cat([square_pattern(side // 2, side), -square_pattern(side - side // 2, side)])
    return pattern / pattern.norm()


class Square(Attack):
    name = "square"

    def __init__(self, eps: float = 0.1, norm: str = "linf", n_queries: int = 5000, p_init: float = 0.8,
                 targeted: bool = False, seed: int = 0):
        super().__init__(eps, norm, targeted, seed)
        self.n_queries = check_positive_int("n_queries", n_queries)
        if self.n_queries < 2:
            raise ValueError(f"n_queries must be >= 2 (the clean image and the starting point), got {n_queries}")
        check_positive("p_init", p_init)
        if p_init > 1:
            raise ValueError(f"p_init must be in (0, 1], got {p_init}")
        self.p_init = float(p_init)

    def margin_and_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: the margin (<= 0 once the goal holds) and the loss the search decreases."""
        label_logit = logits.gather(1, labels[:, None]).squeeze(1)
        best_other = logits.scatter(1, labels[:, None], -float("inf")).amax(1)
        if self.targeted:
            return best_other - label_logit, F.cross_entropy(logits, labels, reduction="none")
        margin = label_logit - best_other
        return margin, margin

    def _side(self, iteration: int, height: int, width: int) -> int:
        side = round(math.sqrt(window_fraction(self.p_init, iteration) * height * width))
        if self.norm == "l2":
            side = max(side, 3)
            side += 1 - side % 2  # odd, so the pattern has a centre
        return max(1, min(side, height, width))

    def _positions(self, count: int, side: int, extent: int, generator: torch.Generator, device) -> torch.Tensor:
        """Window starts in [0, extent - side), or 0 when the window spans the image (see the module docstring)."""
        return torch.randint(0, max(extent - side, 1), (count,), generator=generator).to(device)

    def _signs(self, shape: tuple, generator: torch.Generator, device, dtype) -> torch.Tensor:
        return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).to(device=device, dtype=dtype)

    def _start(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, channels, height, width = x.shape
        if self.norm == "linf":
            return (x + self.eps * self._signs((n, channels, 1, width), generator, x.device, x.dtype)).clamp(0, 1)
        side = max(height // 5, 1)
        offset = (height - 5 * side) // 2
        delta = torch.zeros_like(x)
        pattern = l2_window_pattern(side).to(x.device, x.dtype)
        for top in range(offset, offset + side * (height // side), side):
            for left in range(offset, offset + side * (width // side), side):
                tile = delta[:, :, top:top + side, left:left + side]
                flip = torch.randint(0, 2, (n, 1, 1, 1), generator=generator).bool().to(x.device)
                oriented = torch.where(flip, pattern.t(), pattern)[..., : tile.shape[2], : tile.shape[3]]
                tile += oriented * self._signs((n, channels, 1, 1), generator, x.device, x.dtype)
        return (x + self.eps * l2_normalize(delta)).clamp(0, 1)

    def _propose(self, x: torch.Tensor, x_best: torch.Tensor, iteration: int, generator: torch.Generator) -> torch.Tensor:
        n, channels, height, width = x.shape
        side = self._side(iteration, height, width)
        top = self._positions(n, side, height, generator, x.device)
        left = self._positions(n, side, width, generator, x.device)
        signs = self._signs((n, channels, 1, 1), generator, x.device, x.dtype)
        if self.norm == "linf":
            return torch.where(window_mask(top, left, side, height, width), (x + self.eps * signs).clamp(0, 1), x_best)
        return self._propose_l2(x, x_best, side, top, left, signs, generator)

    def _propose_l2(self, x: torch.Tensor, x_best: torch.Tensor, side: int, top: torch.Tensor, left: torch.Tensor,
                    signs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Window 1 gets a fresh signed pattern plus its old direction, scaled to the norm of windows 1 and 2
        together plus whatever is left to eps; window 2 is emptied."""
        n, channels, height, width = x.shape
        delta = x_best - x
        top2 = self._positions(n, side, height, generator, x.device)
        left2 = self._positions(n, side, width, generator, x.device)
        span = torch.arange(side, device=x.device)
        image = torch.arange(n, device=x.device)[:, None, None]
        rows, cols = (top[:, None] + span)[:, :, None], (left[:, None] + span)[:, None, :]
        second = window_mask(top2, left2, side, height, width)
        both = window_mask(top, left, side, height, width) | second
        current = delta[image, :, rows, cols].permute(0, 3, 1, 2)  # (n, channels, side, side)
        current_norm = torch.linalg.vector_norm(current, dim=(2, 3), keepdim=True)
        image_norm = torch.linalg.vector_norm(delta, dim=(1, 2, 3), keepdim=True)
        windows_norm = torch.linalg.vector_norm(delta * both, dim=(2, 3), keepdim=True)
        flip = torch.randint(0, 2, (n, 1, 1, 1), generator=generator).bool().to(x.device)
        pattern = l2_window_pattern(side).to(x.device, x.dtype)
        proposal = torch.where(flip, pattern.t(), pattern) * signs + current / (1e-12 + current_norm)
        budget = ((self.eps ** 2 - image_norm ** 2).clamp_min(0) / channels + windows_norm ** 2).sqrt()
        proposal = proposal / (1e-12 + torch.linalg.vector_norm(proposal, dim=(2, 3), keepdim=True)) * budget
        delta = delta * ~second
        delta[image, :, rows, cols] = proposal.permute(0, 2, 3, 1)
        return (x + self.eps * l2_normalize(delta)).clamp(0, 1)

    @torch.no_grad()
    def _perturb(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        labels = target if self.targeted else y
        generator = torch.Generator().manual_seed(self.seed)
        margin, _ = self.margin_and_loss(classifier(x), labels)
        result = x.clone()
        active = (margin > 0).nonzero().squeeze(1)
        if self.eps == 0 or not len(active):
            return result
        x_a, labels_a = x[active], labels[active]
        best = self._start(x_a, generator)
        margin, loss = self.margin_and_loss(classifier(best), labels_a)
        for iteration in range(self.n_queries - 2):
            keep = margin > 0
            if not keep.all():
                result[active[~keep]] = best[~keep]
                active, x_a, labels_a, best, margin, loss = (t[keep] for t in (active, x_a, labels_a, best, margin, loss))
                if not len(active):
                    return result
            candidate = self._propose(x_a, best, iteration, generator)
            new_margin, new_loss = self.margin_and_loss(classifier(candidate), labels_a)
            accept = (new_loss < loss) | (new_margin <= 0)
            loss = torch.where(new_loss < loss, new_loss, loss)
            margin = torch.where(accept, new_margin, margin)
            best = torch.where(accept.view(-1, 1, 1, 1), candidate, best)
        result[active] = best
        return result
