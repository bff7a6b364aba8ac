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
    from secsuite.training import train_classifier

    return train_classifier(classifier, data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                            description=description, cosine_decay=True)
