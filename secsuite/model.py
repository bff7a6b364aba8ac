"""Classifier: the one view of a model that attacks, defenses and certifiers work on.

Inputs are always images in [0,1] (N, C, H, W); normalisation lives inside. Device and dtype
come from the wrapped module's parameters. Forward and backward passes are counted in images.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from secsuite.errors import DataError, ModelError


@contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run the body with every submodule in eval mode, then give each its own earlier mode back
    (a model the caller left in train mode, or with only some layers frozen, comes back as it was)."""
    modes = [(child, child.training) for child in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for child, training in modes:
            child.training = training


@torch.no_grad()
def output_classes(net: nn.Module, x: torch.Tensor) -> int:
    """How many logits `net` returns for images like `x` (one forward pass on them, in eval mode)."""
    device = next((t.device for t in list(net.parameters()) + list(net.buffers())), torch.device("cpu"))
    with evaluation_mode(net):
        try:
            logits = net(x.to(device))
        except RuntimeError as error:
            raise ModelError(f"model {type(net).__name__} fails on images of shape {tuple(x.shape)}: {str(error).splitlines()[0][:200]}") from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] < 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelError(f"model {type(net).__name__} returns outputs of shape {shape}; expected (N, num_classes) logits")
    return int(logits.shape[1])


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """Wraps `net` as f(x in [0,1]) -> logits, with input checks and pass counters."""

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        input_shape: tuple[int, int, int],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        name: str = "model",
    ):
        super().__init__()
        channels = input_shape[0]
        mean = list(mean) if mean is not None else [0.0] * channels
        std = list(std) if std is not None else [1.0] * channels
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values (one per channel), got {len(mean)}/{len(std)}")
        if not all(math.isfinite(m) for m in mean):
            raise ValueError(f"mean must be finite, got {mean}")
        if not all(0 < s < math.inf for s in std):
            raise ValueError(f"std must be positive and finite, got {std}")
        self.net = net
        self.normalize = Normalize(mean, std)
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.name = name
        self.normalize.to(self.device)
        self.reset_counters()

    @property
    def device(self) -> torch.device:
        for tensor in list(self.net.parameters()) + list(self.net.buffers()):
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for tensor in self.net.parameters():
            return tensor.dtype
        return torch.float32

    def reset_counters(self) -> None:
        self.n_forward = 0
        self.n_backward = 0

    def counters(self) -> tuple[int, int]:
        return self.n_forward, self.n_backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(self.normalize(x))
        self.n_forward += x.shape[0]
        if logits.requires_grad:
            batch = x.shape[0]
            logits.register_hook(lambda grad: self._count_backward(batch))
        return logits

    def _count_backward(self, batch: int) -> None:
        self.n_backward += batch

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Predicted labels, evaluated in eval mode and in batches."""
        was_training = self.training
        self.eval()
        try:
            return torch.cat([self(x[i : i + batch_size].to(self.device)).argmax(1) for i in range(0, len(x), batch_size)])
        finally:
            self.train(was_training)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
        return (self.predict(x, batch_size) == y.to(self.device)).float().mean().item()

    def check_parameters(self, origin: str) -> None:
        """Raise ModelError naming the first parameter or buffer with NaN or infinite values (`origin`: where they came from)."""
        for name, tensor in list(self.net.named_parameters()) + list(self.net.named_buffers()):
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise ModelError(f"{origin}: {name} holds NaN or infinite values")

    @torch.no_grad()
    def check_outputs(self, x: torch.Tensor) -> None:
        """Raise ModelError unless the model maps images like `x` to one finite logit per class."""
        was_training = self.training
        self.eval()
        try:
            logits = self(x.to(self.device))
        except RuntimeError as error:
            raise ModelError(f"model {self.name} fails on images of shape {tuple(x.shape)}: {str(error).splitlines()[0][:200]}") from None
        finally:
            self.train(was_training)
            self.reset_counters()
        if not isinstance(logits, torch.Tensor) or logits.shape != (x.shape[0], self.num_classes):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ModelError(f"model {self.name} returns outputs of shape {shape} for {x.shape[0]} images; "
                             f"expected ({x.shape[0]}, {self.num_classes}): one logit per class (num_classes = {self.num_classes})")

    def check_inputs(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Raise DataError naming the problem if (x, y) cannot be fed to this model."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise DataError(f"images have shape {tuple(x.shape)}, model {self.name} expects (N, {', '.join(map(str, self.input_shape))})")
        if not torch.isfinite(x).all():
            raise DataError("images contain NaN or infinite values")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise DataError(f"images must be in [0, 1], got range [{x.min().item():.3g}, {x.max().item():.3g}]")
        if y is not None:
            if y.shape != (x.shape[0],):
                raise DataError(f"labels have shape {tuple(y.shape)}, expected ({x.shape[0]},)")
            if y.numel() and (y.min() < 0 or y.max() >= self.num_classes):
                raise DataError(f"labels must be in [0, {self.num_classes}), got range [{y.min().item()}, {y.max().item()}]")
