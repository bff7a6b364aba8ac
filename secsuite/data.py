"""Datasets as in-memory tensors in [0,1]: digits (embedded), mnist:DIR, cifar10:DIR, imagefolder:DIR, synthetic.

`load_dataset(source)` returns train and test splits. A source that ships only a test set
(such as the MNIST test files alone) is split deterministically 80/20 into train/test.
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from secsuite.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


@dataclass
class Dataset:
    x: torch.Tensor  # (N, C, H, W) float32 in [0,1]
    y: torch.Tensor  # (N,) int64
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(f"{self.name}: {self.x.shape[0]} images but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def subset(self, limit: int | None, seed: int = 0) -> "Dataset":
        """A seeded, class-stratified subset of `limit` examples (each class in proportion to its share),
        in the data's own order. The first `limit` would be wrong: image folders are stored sorted by class."""
        if limit is None or limit >= len(self):
            return self
        chosen = self.subset_indices(limit, seed)
        return Dataset(self.x[chosen], self.y[chosen], self.num_classes, self.name)

    def head(self, count: int) -> "Dataset":
        """The first `count` examples in stored order (for data known not to be sorted by class)."""
        return Dataset(self.x[:count], self.y[:count], self.num_classes, self.name)

    def subset_indices(self, limit: int | None, seed: int = 0) -> torch.Tensor:
        """The sorted indices of `subset(limit, seed)` (every index when `limit` covers the data)."""
        if limit is None or limit >= len(self):
            return torch.arange(len(self))
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        labels = self.y[order]
        counts = torch.bincount(labels, minlength=self.num_classes)
        rank_in_class = torch.empty(len(self), dtype=torch.float64)
        for label in labels.unique():
            members = (labels == label).nonzero().squeeze(1)
            rank_in_class[members] = torch.arange(len(members), dtype=torch.float64)
        # Taking the smallest (rank + 0.5) / class size gives every class its proportional share, rounded fairly.
        share = (rank_in_class + 0.5) / counts[labels].double()
        return order[torch.argsort(share, stable=True)[:limit]].sort().values

    def class_counts(self) -> list[int]:
        return torch.bincount(self.y, minlength=self.num_classes).tolist()

    def shard(self, rank: int, world_size: int) -> "Dataset":
        return Dataset(self.x[rank::world_size], self.y[rank::world_size], self.num_classes, self.name)


def _image_tensor(image, where: str) -> torch.Tensor:
    """One image as a float (C, H, W) tensor in [0,1]: a tensor (uint8 is scaled by 1/255), an array or a PIL image."""
    if not isinstance(image, torch.Tensor):
        if hasattr(image, "getbands"):  # a PIL image: (H, W[, C]) bytes
            array = np.asarray(image)
            image = torch.from_numpy(array.copy()).reshape(*array.shape[:2], -1).permute(2, 0, 1)
        else:
            try:
                image = torch.as_tensor(np.asarray(image))
            except (TypeError, ValueError, RuntimeError):
                raise DataError(f"{where}: the image is a {type(image).__name__}, not a tensor, array or PIL image") from None
    return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()


def _pair(item, where: str) -> tuple:
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DataError(f"{where}: expected (image, label) pairs, got a {type(item).__name__}")
    return item[0], item[1]


def _declared_num_classes(data) -> int | None:
    """num_classes as the data declares it (`num_classes`, or torchvision's `classes`), looking through Subset and DataLoader."""
    while data is not None:
        if isinstance(getattr(data, "num_classes", None), int):
            return data.num_classes
        if isinstance(getattr(data, "classes", None), (list, tuple)):
            return len(data.classes)
        data = getattr(data, "dataset", None)
    return None


def as_dataset(data, model_num_classes) -> Dataset:
    """secsuite's Dataset from what a user has: a Dataset, a tuple (x, y), a torch DataLoader of (x, y) batches,
    or any torch Dataset of (image, label) items (Subset, TensorDataset, ImageFolder). num_classes comes from the data
    when it declares it, otherwise from `model_num_classes(x)` (the model's output width)."""
    from torch.utils.data import DataLoader

    if isinstance(data, Dataset):
        return data
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(part, torch.Tensor) for part in data):
        x, y, name = data[0], data[1], "tensors"
    elif isinstance(data, DataLoader):
        batches = [_pair(batch, f"DataLoader batch {i}") for i, batch in enumerate(data)]
        if not batches:
            raise DataError("the DataLoader yields no batches")
        x = torch.cat([torch.as_tensor(bx) for bx, _ in batches])
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        y, name = torch.cat([torch.as_tensor(by).reshape(-1) for _, by in batches]), type(data.dataset).__name__
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (tuple, list, str, dict)):
        if len(data) == 0:
            raise DataError(f"the {type(data).__name__} holds no examples")
        pairs = [_pair(data[i], f"{type(data).__name__} item {i}") for i in range(len(data))]
        images = [_image_tensor(image, f"{type(data).__name__} item {i}") for i, (image, _) in enumerate(pairs)]
        shapes = {tuple(image.shape) for image in images}
        if len(shapes) > 1:
            raise DataError(f"{type(data).__name__}: images have different shapes {sorted(shapes)[:3]}; resize them first")
        x, y, name = torch.stack(images), torch.tensor([int(label) for _, label in pairs]), type(data).__name__
    else:
        raise DataError(f"data: expected a secsuite Dataset, a torch Dataset or DataLoader of (image, label), or a tuple "
                        f"(x, y) of tensors; got a {type(data).__name__}")
    num_classes = _declared_num_classes(data)
    return Dataset(x, y.long(), num_classes if num_classes is not None else model_num_classes(x), name)


@dataclass
class DataSplits:
    train: Dataset
    test: Dataset


def split(data: Dataset, test_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    """Deterministic shuffled split (the same seed always gives the same split)."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(data) * test_fraction))
    test_idx, train_idx = order[:n_test], order[n_test:]
    make = lambda idx, tag: Dataset(data.x[idx], data.y[idx], data.num_classes, f"{data.name}/{tag}")  # noqa: E731
    return DataSplits(make(train_idx, "train"), make(test_idx, "test"))


def load_digits_dataset() -> DataSplits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    return split(Dataset(x, y, 10, "digits"))


def _checked_labels(path: Path, labels: np.ndarray, num_classes: int) -> np.ndarray:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels must be in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    return labels


def _read_idx(path: Path, ndim_expected: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as error:  # bad or truncated gzip stream, unreadable file
        raise DataError(f"{path}: cannot read: {error or type(error).__name__}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an idx file of unsigned bytes")
    ndim = raw[3]
    if ndim != ndim_expected or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: idx header of {ndim} dimensions, expected {ndim_expected}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise DataError(f"{path}: idx header says {expected} values, file holds {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(directory: Path) -> DataSplits:
    def pair(images: str, labels: str, tag: str) -> Dataset | None:
        image_path, label_path = _find(directory, images), _find(directory, labels)
        if image_path is None or label_path is None:
            return None
        images, labels = _read_idx(image_path, 3), _read_idx(label_path, 1)
        if len(images) != len(labels):
            raise DataError(f"{image_path}: {len(images)} images but {label_path} holds {len(labels)} labels")
        x = torch.from_numpy(images.copy()).float().unsqueeze(1) / 255.0
        y = torch.from_numpy(_checked_labels(label_path, labels, 10).astype(np.int64))
        return Dataset(x, y, 10, f"mnist/{tag}")

    train = pair("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "train")
    test = pair("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "test")
    if train is not None and test is not None:
        return DataSplits(train, test)
    if train is None and test is None:
        raise DataError(f"{directory}: no MNIST idx files (t10k-images-idx3-ubyte[.gz] / t10k-labels-idx1-ubyte[.gz])")
    only = train if train is not None else test
    return split(Dataset(only.x, only.y, 10, "mnist"))


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """CIFAR-10 batches are pickles of dicts of arrays; refuse anything that could run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"refusing to unpickle {module}.{name} from a CIFAR-10 batch")
        return super().find_class(module, name)


def load_cifar10(directory: Path) -> DataSplits:
    def batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with open(path, "rb") as handle:
                entry = _ArrayOnlyUnpickler(handle, encoding="bytes").load()
        except DataError:
            raise
        except Exception as error:  # garbage or truncated bytes fail in many ways inside the unpickler
            raise DataError(f"{path}: not a CIFAR-10 python batch ({type(error).__name__}: {str(error)[:120]})") from None
        if not isinstance(entry, dict):
            raise DataError(f"{path}: not a CIFAR-10 python batch (a {type(entry).__name__}, not a dict)")
        data = entry.get(b"data", entry.get("data"))
        labels = entry.get(b"labels", entry.get("labels"))
        if data is None or labels is None:
            raise DataError(f"{path}: not a CIFAR-10 python batch (no data/labels)")
        try:
            images, labels = np.asarray(data, dtype=np.uint8), np.asarray(labels, dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as error:
            raise DataError(f"{path}: CIFAR-10 data/labels are not arrays of numbers ({error})") from None
        if images.size % (3 * 32 * 32) or labels.ndim != 1 or images.size // (3 * 32 * 32) != len(labels):
            raise DataError(f"{path}: expected N x 3072 pixel bytes and N labels, got data of shape {images.shape} and {labels.shape} labels")
        return images.reshape(-1, 3, 32, 32), _checked_labels(path, labels, 10)

    def to_dataset(paths: list[Path], tag: str) -> Dataset:
        parts = [batch(path) for path in paths]
        x = torch.from_numpy(np.concatenate([p[0] for p in parts])).float() / 255.0
        y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        return Dataset(x, y, 10, f"cifar10/{tag}")

    train_paths = sorted(directory.glob("data_batch_*"))
    test_path = directory / "test_batch"
    if not test_path.is_file():
        raise DataError(f"{directory}: no CIFAR-10 test_batch file")
    test = to_dataset([test_path], "test")
    if not train_paths:
        return split(Dataset(test.x, test.y, 10, "cifar10"))
    return DataSplits(to_dataset(train_paths, "train"), test)


def _load_image_tree(root: Path, classes: list[str], tag: str) -> Dataset:
    from PIL import Image

    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                if not path.is_file():
                    raise DataError(f"{path}: not an image file")
                try:
                    with Image.open(path) as image:
                        images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
                except (OSError, ValueError, Image.DecompressionBombError) as error:  # corrupt, truncated, not an image
                    raise DataError(f"{path}: cannot read image: {str(error)[:160] or type(error).__name__}") from None
                labels.append(label)
    if not images:
        raise DataError(f"{root}: no images found")
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise DataError(f"{root}: images have different sizes {sorted(shapes)[:3]}; resize them first")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return Dataset(x, torch.tensor(labels), len(classes), f"imagefolder/{tag}")


def load_imagefolder(directory: Path) -> DataSplits:
    """DIR/train/<class>/... and DIR/val|test/<class>/... (or DIR/<class>/... split 80/20)."""
    train_root = directory / "train"
    test_root = next((directory / d for d in ("val", "test") if (directory / d).is_dir()), None)
    if train_root.is_dir():
        classes = sorted(p.name for p in train_root.iterdir() if p.is_dir())
        train = _load_image_tree(train_root, classes, "train")
        if test_root is None:
            return split(Dataset(train.x, train.y, train.num_classes, "imagefolder"))
        return DataSplits(train, _load_image_tree(test_root, classes, "test"))
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{directory}: no class folders")
    whole = _load_image_tree(directory, classes, "all")
    return split(Dataset(whole.x, whole.y, whole.num_classes, "imagefolder"))


def load_synthetic(n: int = 1000, num_classes: int = 10, shape: tuple[int, int, int] = (1, 8, 8), seed: int = 0) -> DataSplits:
    """Class-conditional Gaussian blobs clipped to [0,1]: learnable, for smoke tests only."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.rand((num_classes, *shape), generator=generator)
    y = torch.arange(n) % num_classes
    x = (centers[y] + 0.15 * torch.randn((n, *shape), generator=generator)).clamp(0, 1)
    return split(Dataset(x, y, num_classes, "synthetic"), seed=seed)


FOLDER_LOADERS = {"mnist": load_mnist, "cifar10": load_cifar10, "imagefolder": load_imagefolder}


def data_folder(source: str) -> tuple[str, Path | None]:
    """The kind of a data source and its folder (None for embedded data), without reading anything:
    DataError if the kind is unknown or the folder does not exist."""
    if source in ("digits", "synthetic"):
        return source, None
    kind, _, location = source.partition(":")
    if kind not in FOLDER_LOADERS or not location:
        raise DataError(f"unknown data source {source!r}; use digits, synthetic, mnist:DIR, cifar10:DIR or imagefolder:DIR")
    directory = Path(location).expanduser()
    if not directory.is_dir():
        raise DataError(f"data directory not found: {directory}")
    return kind, directory


def load_dataset(source: str) -> DataSplits:
    """Load `digits`, `synthetic`, `mnist:DIR`, `cifar10:DIR` or `imagefolder:DIR`."""
    kind, directory = data_folder(source)
    if directory is None:
        return load_digits_dataset() if kind == "digits" else load_synthetic()
    splits = FOLDER_LOADERS[kind](directory)
    for part in (splits.train, splits.test):
        if len(part) == 0:
            raise DataError(f"{directory}: the {part.name} split has no images")
    return splits


DATASETS = {
    "digits": "scikit-learn's 1,797 8x8 digits (embedded, 80/20 split)",
    "synthetic": "class-conditional Gaussian blobs, 1x8x8 (smoke tests)",
    "mnist:DIR": "MNIST idx files (.gz or raw); test-only folders are split 80/20",
    "cifar10:DIR": "CIFAR-10 python batches (data_batch_*, test_batch)",
    "imagefolder:DIR": "DIR/train/<class>/*.png|jpg and DIR/val|test/<class>/...",
}
