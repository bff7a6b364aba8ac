"""Data poisoning (all-to-one or all-to-all), training a backdoored model, and the CA / ASR / RA metrics."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attacks.backdoor.models import train_model
from attacks.backdoor.triggers import Trigger
from secsuite.data import Dataset
from secsuite.model import Classifier

MODES = ("all-to-one", "all-to-all")


@dataclass
class BackdoorMetrics:
    clean_acc: float  # CA: clean test accuracy
    asr: float  # attack success rate on triggered non-target test images
    robust_acc: float  # RA: triggered non-target test images still given their true label

    def as_dict(self) -> dict[str, float]:
        return {"clean_acc": self.clean_acc, "asr": self.asr, "robust_acc": self.robust_acc}


class BackdoorAttack:
    """Poison `rate` of a training set with `trigger` and relabel to `target` (all-to-one) or y+1 mod K (all-to-all)."""

    def __init__(self, trigger: Trigger, target: int = 0, rate: float = 0.1, mode: str = "all-to-one", num_classes: int = 10, seed: int = 0):
        if not isinstance(trigger, Trigger):
            raise ValueError(f"trigger must be a Trigger, got {type(trigger).__name__}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not 0 <= target < num_classes:
            raise ValueError(f"target label must be in [0, {num_classes}), got {target}")
        if not 0 < rate <= 1:
            raise ValueError(f"poison rate must be in (0, 1], got {rate}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.trigger, self.target, self.rate, self.mode = trigger, int(target), float(rate), mode
        self.num_classes, self.seed = int(num_classes), seed

    def target_of(self, y: torch.Tensor) -> torch.Tensor:
        if self.mode == "all-to-one":
            return torch.full_like(y, self.target)
        return (y + 1) % self.num_classes

    def poison(self, data: Dataset) -> tuple[Dataset, torch.Tensor]:
        """The poisoned training set and the indices that carry the trigger.

        All-to-one draws poisons from non-target images only, so that each one teaches the backdoor.
        """
        if data.num_classes != self.num_classes:
            raise ValueError(f"num_classes: attack built for {self.num_classes} classes, data has {data.num_classes}")
        candidates = torch.arange(len(data)) if self.mode == "all-to-all" else torch.nonzero(data.y != self.target).flatten()
        count = min(len(candidates), max(1, round(self.rate * len(data))))
        order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(self.seed))
        index = candidates[order[:count]]
        x, y = data.x.clone(), data.y.clone()
        x[index] = self.trigger.apply(x[index])
        y[index] = self.target_of(y[index])
        return Dataset(x, y, data.num_classes, f"{data.name}+{self.trigger.name}"), index

    def triggered(self, data: Dataset) -> Dataset:
        """Test images that can show the backdoor (non-target ones for all-to-one), triggered, with true labels."""
        keep = data.y != self.target if self.mode == "all-to-one" else torch.ones_like(data.y, dtype=torch.bool)
        return Dataset(self.trigger.apply(data.x[keep]), data.y[keep], data.num_classes, f"{data.name}+trigger")

    def train(self, classifier: Classifier, data: Dataset, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64, seed: int = 0) -> torch.Tensor:
        """Train `classifier` in place on the poisoned set (Adam, cosine-decayed rate); returns the poisoned indices."""
        poisoned, index = self.poison(data)
        train_model(classifier, poisoned, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                    description=f"training with {self.trigger.name} backdoor")
        return index

    def metrics(self, classifier: Classifier, test: Dataset) -> BackdoorMetrics:
        triggered = self.triggered(test)
        predicted = classifier.predict(triggered.x).cpu()
        return BackdoorMetrics(
            clean_acc=classifier.accuracy(test.x, test.y),
            asr=(predicted == self.target_of(triggered.y)).float().mean().item(),
            robust_acc=(predicted == triggered.y).float().mean().item(),
        )

    def describe(self) -> str:
        goal = f"target {self.target}" if self.mode == "all-to-one" else "y -> y+1"
        return f"{self.trigger.describe()}, {goal}, poison rate {self.rate:g}"
