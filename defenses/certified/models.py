"""A small CNN suited to certified training: strided convolutions, no pooling, two linear layers.

This is the 4-layer "CNN small" of the IBP/CROWN-IBP papers. IBP bounds loosen with every layer and pooling
adds relaxation error, so certified training wants shallow, strided networks. Use it from a config as
`source = "python:defenses.certified.models:ibp_cnn"`
(the config form builds the MNIST shape, 10 classes, 1x28x28).
"""

from __future__ import annotations

from torch import nn


def ibp_cnn(num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 28, 28), width: int = 16, hidden: int = 100) -> nn.Module:
    if width < 1 or hidden < 1:
        raise ValueError(f"width and hidden must be >= 1, got {width} and {hidden}")
    channels, height, width_px = input_shape
    # conv(4, stride 2, pad 1) halves the size; conv(4, stride 1, pad 1) shrinks it by one.
    out_h, out_w = height // 2 - 1, width_px // 2 - 1
    return nn.Sequential(
        nn.Conv2d(channels, width, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 4, 1, 1), nn.ReLU(),
        nn.Flatten(), nn.Linear(2 * width * out_h * out_w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
    )
