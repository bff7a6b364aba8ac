"""CUDA: Convolution-based Unlearnable DAtaset (Sadasivan et al., CVPR 2023).

Every class gets its own random blur filter derived from a private key; training images are
convolved with their label's filter. A model trained on the result learns the filters (a
shortcut that is perfectly correlated with the label) instead of the content, so it fails on
clean test images. The test set stays clean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from secsuite.data import Dataset, DataSplits


class CUDA:
    """Class-wise convolutional protection.

    key: the private key (seed); the same key always gives the same filters.
    blur: k_b, the upper bound of the uniform filter weights (0.3 in the paper).
    kernel_size: odd filter size (3 in the paper).
    mix: fraction of training images that are protected (the rest stay clean).
    """

    def __init__(self, key: int = 0, blur: float = 0.3, kernel_size: int = 3, mix: float = 1.0):
        if int(key) != key:
            raise ValueError(f"key must be an integer, got {key!r}")
        if not blur > 0:
            raise ValueError(f"blur must be > 0, got {blur}")
        if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"mix must be in [0, 1], got {mix}")
        self.key, self.blur, self.kernel_size, self.mix = int(key), float(blur), int(kernel_size), float(mix)

    def filters(self, num_classes: int) -> torch.Tensor:
        """(num_classes, k, k): per class in index order, U(0, blur) weights with one random tap set to 1."""
        generator = torch.Generator().manual_seed(self.key)
        k = self.kernel_size
        filters = torch.empty(num_classes, k, k)
        for c in range(num_classes):
            filters[c] = torch.rand((k, k), generator=generator) * self.blur
            row = torch.randint(0, k, (1,), generator=generator).item()
            col = torch.randint(0, k, (1,), generator=generator).item()
            filters[c, row, col] = 1.0
        return filters

    def protected_indices(self, n: int) -> torch.Tensor:
        """Which of n training images are protected (seeded by the key, so mix 0.5 is reproducible)."""
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.key + 1))
        return order[: int(round(self.mix * n))].sort().values

    def apply(self, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Convolve each image with its label's filter (depthwise, zero padding), divide by its max, quantise to uint8."""
        channels = x.shape[1]
        filters = self.filters(num_classes).to(x.device, x.dtype)
        out = torch.empty_like(x)
        for c in range(num_classes):
            mask = y == c
            if mask.any():
                # The same kernel for every channel, applied depthwise.
                weight = filters[c].expand(channels, 1, -1, -1)
                out[mask] = F.conv2d(x[mask], weight, padding=self.kernel_size // 2, groups=channels)
        peak = out.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        # The paper stores uint8 images by truncation (not rounding).
        return torch.floor(out / peak * 255.0) / 255.0

    def protect(self, data: Dataset) -> Dataset:
        """The protected copy of a training set: a `mix` fraction convolved, the rest unchanged."""
        index = self.protected_indices(len(data)).to(data.x.device)
        x = data.x.clone()
        if len(index):
            x[index] = self.apply(data.x[index], data.y[index], data.num_classes)
        return Dataset(x, data.y.clone(), data.num_classes, f"{data.name}+cuda")

    def params(self) -> dict:
        return {"key": self.key, "blur": self.blur, "kernel_size": self.kernel_size, "mix": self.mix}


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    # Values are already multiples of 1/255 (or clean uint8 data); round to undo float error only.
    return (x.detach().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()


def write_dataset(splits: DataSplits, directory: str | Path) -> str:
    """Write (protected train, clean test) in a format `load_dataset` reads; returns the source string.

    Grayscale data becomes MNIST idx files (`mnist:DIR`), colour data an image folder of PNGs
    (`imagefolder:DIR`, DIR/train/<class>/ and DIR/test/<class>/).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    channels = splits.train.x.shape[1]
    if channels == 1:
        for data, prefix in ((splits.train, "train"), (splits.test, "t10k")):
            _write_idx(directory / f"{prefix}-images-idx3-ubyte", _to_uint8(data.x[:, 0]))
            _write_idx(directory / f"{prefix}-labels-idx1-ubyte", data.y.cpu().numpy())
        return f"mnist:{directory}"
    if channels != 3:
        raise ValueError(f"can only write 1- or 3-channel images, got {channels} channels")
    from PIL import Image

    for data, tag in ((splits.train, "train"), (splits.test, "test")):
        images = _to_uint8(data.x).transpose(0, 2, 3, 1)
        width = len(str(data.num_classes - 1))
        for c in range(data.num_classes):
            (directory / tag / f"{c:0{width}d}").mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, data.y.tolist())):
            Image.fromarray(image).save(directory / tag / f"{label:0{width}d}" / f"{i:06d}.png")
    return f"imagefolder:{directory}"
