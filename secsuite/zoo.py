"""Built-in architectures. Every factory takes (num_classes, input_shape, **options) and returns an nn.Module.

Models are written with plain layers (nn.Flatten, no `x.size(0)` reshapes) so that auto_LiRPA
and CrypTen's ONNX path can trace them at any batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


def small_cnn(num_classes: int, input_shape: tuple[int, int, int], width: int = 32, pool: str = "max") -> nn.Module:
    """Two conv blocks and two linear layers; `pool` is "max" or "avg" (MPC-friendly)."""
    if pool not in ("max", "avg"):
        raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
    channels, height, width_px = input_shape
    pool_layer = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
    features = (height // 4) * (width_px // 4) * width * 2
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), pool_layer(2),
        nn.Conv2d(width, width * 2, 3, padding=1), nn.ReLU(), pool_layer(2),
        nn.Flatten(), nn.Linear(features, 128), nn.ReLU(), nn.Linear(128, num_classes),
    )


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, preact: bool):
        super().__init__()
        self.preact = preact
        self.bn1 = nn.BatchNorm2d(in_planes if preact else planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            layers: list[nn.Module] = [nn.Conv2d(in_planes, planes, 1, stride, bias=False)]
            if not preact:
                layers.append(nn.BatchNorm2d(planes))
            self.shortcut = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            out = F.relu(self.bn1(x))
            shortcut = self.shortcut(out) if len(self.shortcut) else x
            out = self.conv2(F.relu(self.bn2(self.conv1(out))))
            return out + shortcut
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _ResNet(nn.Module):
    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], blocks: list[int], widths: list[int], preact: bool):
        super().__init__()
        self.preact = preact
        self.conv1 = nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[-1] if preact else widths[0])
        layers, in_planes = [], widths[0]
        for index, (count, planes) in enumerate(zip(blocks, widths)):
            stride = 1 if index == 0 else 2
            stage = []
            for block in range(count):
                stage.append(_BasicBlock(in_planes, planes, stride if block == 0 else 1, preact))
                in_planes = planes
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, *rest = layers
        self.layer4 = rest[0] if rest else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        if not self.preact:
            out = F.relu(self.bn1(out))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if self.preact:
            out = F.relu(self.bn1(out))
        return self.linear(self.flatten(self.pool(out)))


def resnet18(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """CIFAR ResNet-18 (3x3 stem, no max-pool)."""
    return _ResNet(num_classes, input_shape, [2, 2, 2, 2], [64, 128, 256, 512], preact=False)


def preact_resnet18(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    return _ResNet(num_classes, input_shape, [2, 2, 2, 2], [64, 128, 256, 512], preact=True)


def wrn_16_4(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """Wide ResNet 16-4: three stages of two pre-activation blocks, widths 64/128/256."""
    return _ResNet(num_classes, input_shape, [2, 2, 2], [64, 128, 256], preact=True)


class QuadGELU(nn.Module):
    """MPCFormer's quadratic GeLU: 0.125x^2 + 0.25x + 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.125 * x * x + 0.25 * x + 0.5


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"gelu": nn.GELU, "quad": QuadGELU, "relu": nn.ReLU}
ATTENTIONS = ("softmax", "relu_softmax", "scale", "2quad")


def attention_weights(scores: torch.Tensor, kind: str) -> torch.Tensor:
    """Turn scaled scores QK^T/sqrt(d) of shape (B, H, N, N) into attention weights."""
    if kind == "softmax":
        return scores.softmax(dim=-1)
    if kind == "relu_softmax":
        positive = F.relu(scores)
        return positive / (positive.sum(dim=-1, keepdim=True) + 1e-5)
    if kind == "scale":
        return scores / scores.shape[-1]
    if kind == "2quad":
        shifted = (scores + 5) ** 2
        return shifted / shifted.sum(dim=-1, keepdim=True)
    raise ValueError(f"attention must be one of {ATTENTIONS}, got {kind!r}")


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kind: str):
        super().__init__()
        if kind not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {kind!r}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.kind = heads, kind
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        head_dim = dim // self.heads
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
        out = attention_weights(scores, self.kind) @ v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, attention: str, activation: str):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, attention)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), ACTIVATIONS[activation](), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A small ViT with a class token; attention and activation are pluggable (MPC-friendly variants)."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], patch: int | None = None, dim: int = 64,
                 depth: int = 2, heads: int = 4, mlp_ratio: int = 2, attention: str = "softmax", activation: str = "gelu"):
        super().__init__()
        channels, height, width = input_shape
        patch = patch or max(1, height // 4)
        if height % patch or width % patch:
            raise ValueError(f"patch {patch} does not divide the image size {height}x{width}")
        tokens = (height // patch) * (width // patch)
        self.patch_embed = nn.Conv2d(channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, attention, activation) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit_small(num_classes: int, input_shape: tuple[int, int, int], **options) -> nn.Module:
    return ViT(num_classes, input_shape, **options)


ZOO: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": small_cnn,
    "resnet18": resnet18,
    "preact_resnet18": preact_resnet18,
    "wrn_16_4": wrn_16_4,
    "vit_small": vit_small,
}


def build(name: str, num_classes: int, input_shape: tuple[int, int, int], **options) -> nn.Module:
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r}; choose from {', '.join(sorted(ZOO))}")
    return ZOO[name](num_classes, input_shape, **options)
