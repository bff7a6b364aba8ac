"""Neural Cleanse trigger reverse engineering (Wang et al. 2019), for one label or all of them.

For a label t find a mask m (H x W, shared over channels) and pattern p in [0,1] such that
x' = (1 - m) x + m p is classified as t, minimising CE + lambda * |m|_1. As in the paper, m and
p live in tanh space and lambda is raised while the trigger works and lowered while it fails,
so the result is (about) the smallest trigger reaching `success` on the clean set.

`shape="blend"` (our addition) restricts the mask to one value alpha over the whole image,
x' = (1 - alpha) x + alpha p: the trigger family of Blended backdoors, whose global low-amplitude
pattern a per-pixel mask recovers poorly. Its size is reported as alpha * H * W (the L1 norm of the
uniform mask), so per-label ratios compare the same way in both shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from secsuite.model import Classifier
from secsuite.progress import progress_bar


@dataclass
class RecoveredTrigger:
    label: int
    mask: torch.Tensor  # (1, H, W) in [0,1]
    pattern: torch.Tensor  # (C, H, W) in [0,1]
    l1: float  # |m|_1 in pixels
    success: float  # fraction of clean (non-label) images sent to `label`

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        mask, pattern = self.mask.to(x.device), self.pattern.to(x.device)
        return (1 - mask) * x + mask * pattern


class NeuralCleanse:
    SHAPES = ("mask", "blend")

    def __init__(self, steps: int = 200, lr: float = 0.1, lam: float = 1e-2, success: float = 0.95, adjust_every: int = 10, seed: int = 0,
                 shape: str = "mask"):
        if shape not in self.SHAPES:
            raise ValueError(f"shape must be one of {self.SHAPES}, got {shape!r}")
        self.shape = shape
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if lam <= 0:
            raise ValueError(f"lam must be > 0, got {lam}")
        if not 0 < success <= 1:
            raise ValueError(f"success must be in (0, 1], got {success}")
        if adjust_every < 1:
            raise ValueError(f"adjust_every must be >= 1, got {adjust_every}")
        self.steps, self.lr, self.lam, self.success, self.adjust_every, self.seed = steps, lr, lam, success, adjust_every, seed

    def recover(self, classifier: Classifier, x: torch.Tensor, label: int) -> RecoveredTrigger:
        """Reverse-engineer the smallest trigger for `label` on clean images `x` (images of `label` are ignored)."""
        classifier.eval()
        device = classifier.device
        x = x.to(device)
        channels, height, width = x.shape[1:]
        generator = torch.Generator().manual_seed(self.seed + label)
        mask_shape = (1, height, width) if self.shape == "mask" else (1, 1, 1)
        mask_raw = (torch.randn(mask_shape, generator=generator) * 0.1).to(device).requires_grad_()
        pattern_raw = (torch.randn((channels, height, width), generator=generator) * 0.1).to(device).requires_grad_()
        optimizer = torch.optim.Adam([mask_raw, pattern_raw], lr=self.lr, betas=(0.5, 0.9))
        target = torch.full((len(x),), label, device=device)
        lam = self.lam
        best: RecoveredTrigger | None = None
        fallback: RecoveredTrigger | None = None
        successes: list[float] = []
        for parameter in classifier.parameters():
            parameter.requires_grad_(False)
        try:
            with progress_bar(f"neural cleanse label {label}", total=self.steps) as advance:
                for _ in range(self.steps):
                    mask = ((torch.tanh(mask_raw) + 1) / 2).expand(1, height, width)
                    pattern = (torch.tanh(pattern_raw) + 1) / 2
                    logits = classifier((1 - mask) * x + mask * pattern)
                    l1 = mask.sum()
                    loss = F.cross_entropy(logits, target) + lam * l1
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    advance()
                    rate = (logits.argmax(1) == target).float().mean().item()
                    successes.append(rate)
                    candidate = RecoveredTrigger(label, mask.detach().cpu(), pattern.detach().cpu(), l1.item(), rate)
                    if rate >= self.success and (best is None or candidate.l1 < best.l1):
                        best = candidate
                    if fallback is None or rate > fallback.success:
                        fallback = candidate
                    if len(successes) % self.adjust_every == 0:
                        recent = sum(successes[-self.adjust_every :]) / self.adjust_every
                        lam = lam * 1.5 if recent >= self.success else lam / 1.5
        finally:
            for parameter in classifier.parameters():
                parameter.requires_grad_(True)
        # A label whose trigger never reached `success` is charged the whole image: no small trigger was found.
        if best is None:
            assert fallback is not None
            return RecoveredTrigger(label, fallback.mask, fallback.pattern, float(height * width), fallback.success)
        return best

    def scan(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, labels: list[int] | None = None) -> list[RecoveredTrigger]:
        """Triggers for `labels` (all by default); each uses only clean images whose true label differs."""
        labels = list(range(classifier.num_classes)) if labels is None else labels
        return [self.recover(classifier, x[y != label], label) for label in labels]


def anomaly_index(norms: list[float]) -> list[float]:
    """Neural Cleanse's MAD anomaly index per label (positive = smaller than the median)."""
    values = torch.tensor(norms)
    median = values.median()
    mad = (values - median).abs().median() * 1.4826
    return ((median - values) / mad.clamp_min(1e-12)).tolist()
