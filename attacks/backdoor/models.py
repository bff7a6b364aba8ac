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
