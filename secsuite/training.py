"""Plain supervised training, shared by the default audit and by defenses that train models."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F

from secsuite.data import Dataset
from secsuite.model import Classifier
from secsuite.progress import progress_bar

LossFn = Callable[[Classifier, torch.Tensor, torch.Tensor], torch.Tensor]


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """One epoch's minibatch indices: a seeded permutation of range(n), cut into batches, on `device`."""
    order = torch.randperm(n, generator=generator).to(device)
    return list(order.split(batch_size))


def cross_entropy_loss(classifier: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(classifier(x), y)


def train_classifier(
    classifier: Classifier,
    data: Dataset,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    loss_fn: LossFn = cross_entropy_loss,
    weight_decay: float = 0.0,
    description: str = "training",
    on_epoch_end: Callable[[int, float], None] | None = None,
    cosine_decay: bool = False,
) -> list[float]:
    """Adam training with a seeded shuffle; returns the mean loss of each epoch.

    cosine_decay: decay the learning rate to zero on a per-step cosine, so that the last steps' noise
    does not stay in the weights (models trained with different seeds then agree more closely).
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    device = classifier.device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = None
    if cosine_decay:
        total_steps = max(1, epochs * math.ceil(len(data) / batch_size))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    x_all, y_all = data.x.to(device), data.y.to(device)
    losses: list[float] = []
    classifier.train()
    with progress_bar(description, total=epochs) as advance:
        for epoch in range(epochs):
            total, count = 0.0, 0
            for index in shuffled_batches(len(data), batch_size, generator, device):
                loss = loss_fn(classifier, x_all[index], y_all[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if schedule is not None:
                    schedule.step()
                total += loss.item() * len(index)
                count += len(index)
            losses.append(total / max(count, 1))
            if on_epoch_end is not None:
                on_epoch_end(epoch, losses[-1])
            advance()
    classifier.eval()
    classifier.reset_counters()
    return losses
