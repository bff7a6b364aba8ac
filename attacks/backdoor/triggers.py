"""Backdoor triggers: a BadNets patch and a Blended pattern, both as a mask and a pattern.

Every trigger is x' = (1 - m) * x + m * p with a mask m and pattern p of the image's shape, so
poisoning, metrics and the recovered (Neural Cleanse) triggers share one formula.
"""

from __future__ import annotations

import torch

POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left")
PATCH_PATTERNS = ("white", "checkerboard")


class Trigger:
    """Base class: subclasses build (mask, pattern) for an input shape."""

    name = "trigger"

    def mask_and_pattern(self, input_shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        mask, pattern = self.mask_and_pattern(tuple(x.shape[1:]))
        mask, pattern = mask.to(x.device, x.dtype), pattern.to(x.device, x.dtype)
        return ((1 - mask) * x + mask * pattern).clamp(0, 1)

    def describe(self) -> str:
        return self.name


class BadNets(Trigger):
    """A size x size patch (white or checkerboard) at a corner, or at an explicit (row, col) offset."""

    name = "badnets"

    def __init__(self, size: int = 3, position: str | tuple[int, int] = "bottom-right", pattern: str = "white", margin: int = 0):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        if isinstance(position, str) and position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS} or (row, col), got {position!r}")
        if not isinstance(position, str) and (len(position) != 2 or min(position) < 0):
            raise ValueError(f"position must be one of {POSITIONS} or non-negative (row, col), got {position!r}")
        if pattern not in PATCH_PATTERNS:
            raise ValueError(f"pattern must be one of {PATCH_PATTERNS}, got {pattern!r}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.size, self.position, self.pattern, self.margin = size, position, pattern, margin

    def offset(self, height: int, width: int) -> tuple[int, int]:
        if not isinstance(self.position, str):
            return int(self.position[0]), int(self.position[1])
        vertical, horizontal = self.position.split("-")
        row = height - self.size - self.margin if vertical == "bottom" else self.margin
        col = width - self.size - self.margin if horizontal == "right" else self.margin
        return row, col

    def mask_and_pattern(self, input_shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        channels, height, width = input_shape
        row, col = self.offset(height, width)
        if row < 0 or col < 0 or row + self.size > height or col + self.size > width:
            raise ValueError(f"size: a {self.size}x{self.size} trigger at ({row}, {col}) does not fit a {height}x{width} image")
        mask = torch.zeros(input_shape)
        mask[:, row : row + self.size, col : col + self.size] = 1.0
        pattern = torch.zeros(input_shape)
        if self.pattern == "white":
            patch = torch.ones(self.size, self.size)
        else:
            index = torch.arange(self.size)
            patch = ((index.view(-1, 1) + index.view(1, -1)) % 2 == 0).float()
        pattern[:, row : row + self.size, col : col + self.size] = patch
        return mask, pattern

    def describe(self) -> str:
        return f"BadNets {self.pattern} {self.size}x{self.size} patch at {self.position}"


class Blended(Trigger):
    """x' = (1 - alpha) x + alpha * pattern; the pattern is given or uniform noise from `seed` (Chen et al. 2017)."""

    name = "blended"

    def __init__(self, alpha: float = 0.2, pattern: torch.Tensor | None = None, seed: int = 0):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if pattern is not None and (pattern.min() < 0 or pattern.max() > 1):
            raise ValueError("pattern must be in [0, 1]")
        self.alpha, self.pattern, self.seed = float(alpha), pattern, seed

    def mask_and_pattern(self, input_shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pattern is None:
            pattern = torch.rand(input_shape, generator=torch.Generator().manual_seed(self.seed))
        elif tuple(self.pattern.shape) != tuple(input_shape):
            raise ValueError(f"pattern: shape {tuple(self.pattern.shape)} does not match the image shape {tuple(input_shape)}")
        else:
            pattern = self.pattern.float()
        return torch.full(input_shape, self.alpha), pattern

    def describe(self) -> str:
        return f"Blended noise pattern, alpha {self.alpha}"


TRIGGERS: dict[str, type[Trigger]] = {"badnets": BadNets, "blended": Blended}


def make_trigger(name: str, **params) -> Trigger:
    if name not in TRIGGERS:
        raise ValueError(f"trigger must be one of {tuple(TRIGGERS)}, got {name!r}")
    try:
        return TRIGGERS[name](**params)
    except TypeError as error:
        raise ValueError(f"trigger {name}: {error}") from None
