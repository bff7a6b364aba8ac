"""A small CNN with BatchNorm: EBYD's removal learns per-channel masks on BatchNorm layers.

The zoo's small_cnn has no BatchNorm and its ResNets are too slow for MNIST on a CPU, so the
backdoor benchmark and tests use this one (about 30k parameters at width 16).
"""

from __future__ import annotations

from torch import nn


def bn_cnn(num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 28, 28), width: int = 16) -> nn.Module:
    """Three conv-BN-ReLU blocks (two pooled), global average pooling, one linear layer."""
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    channels = input_shape[0]

    def block(c_in: int, c_out: int, pool: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        return layers + [nn.MaxPool2d(2)] if pool else layers

    return nn.Sequential(
        *block(channels, width, True), *block(width, width * 2, True), *block(width * 2, width * 4, False),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width * 4, num_classes),
    )


def train_model(classifier, data, epochs: int = 10, lr: float = 2e-3, batch_size: int = 64, seed: int = 0,
                description: str = "training") -> list[float]:
    """Adam with a per-step cosine decay of the learning rate to zero, seeded shuffle; returns mean loss per epoch.

    A constant Adam rate left the last epoch's noise in the weights (two clean seeds 7.8 points apart
    after 6 epochs at lr 2e-3); decaying to zero lets every seed settle, clean and backdoored alike.
    """
    import math

    import torch
    from torch.nn import functional as F

    from secsuite.progress import progress_bar

    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    device = classifier.device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    total_steps = max(1, epochs * math.ceil(len(data) / batch_size))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    x_all, y_all = data.x.to(device), data.y.to(device)
    losses: list[float] = []
    classifier.train()
    with progress_bar(description, total=epochs) as advance:
        for _ in range(epochs):
            order = torch.randperm(len(data), generator=generator).to(device)
            total = 0.0
            for start in range(0, len(data), batch_size):
                index = order[start : start + batch_size]
                loss = F.cross_entropy(classifier(x_all[index]), y_all[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * len(index)
            losses.append(total / max(len(data), 1))
            advance()
    classifier.eval()
    classifier.reset_counters()
    return losses
