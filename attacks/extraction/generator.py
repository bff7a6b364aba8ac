"""The DFME generator: Linear -> BN -> 2x [upsample, conv-BN-LeakyReLU] -> conv -> BN(affine=False) -> tanh."""

from __future__ import annotations

import math

import torch
from torch import nn


class Generator(nn.Module):
    """Maps noise z to images; `forward` returns the pre-tanh image, `images` the [0,1] image the victim sees."""

    def __init__(self, input_shape: tuple[int, int, int], nz: int = 100, width: int = 64):
        super().__init__()
        channels, height, width_px = input_shape
        self.nz = nz
        self.init_size = (math.ceil(height / 4), math.ceil(width_px / 4))
        self.project = nn.Sequential(nn.Linear(nz, 2 * width * self.init_size[0] * self.init_size[1]), nn.BatchNorm1d(2 * width * self.init_size[0] * self.init_size[1]))
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Upsample(size=(height, width_px)), nn.Conv2d(2 * width, width, 3, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.Conv2d(width, channels, 3, padding=1), nn.BatchNorm2d(channels, affine=False),
        )
        self.width = width

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.project(z).view(z.shape[0], 2 * self.width, *self.init_size)
        return self.body(out)

    @staticmethod
    def to_image(pre_tanh: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(pre_tanh) + 1) / 2

    def images(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_image(self(z))

    def noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn((n, self.nz), generator=generator).to(next(self.parameters()).device)
