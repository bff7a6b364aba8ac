"""Loaders on files written in the exact on-disk formats, model sources, and safe checkpoint loading."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from secsuite.data import load_dataset
from secsuite.errors import DataError, ModelError
from secsuite.sources import load_classifier, load_state_dict
from secsuite.zoo import build


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    (gzip.open if compress else open)(path, "wb").write(header + array.astype(np.uint8).tobytes())


def test_digits_split_is_deterministic(digits):
    again = load_dataset("digits")
    assert torch.equal(digits.test.x, again.test.x) and len(digits.train) + len(digits.test) == 1797
    assert digits.train.x.min() >= 0 and digits.train.x.max() <= 1


def test_real_mnist_split(mnist_dir):
    splits = load_dataset(f"mnist:{mnist_dir}")
    assert (len(splits.train), len(splits.test)) == (8000, 2000)
    assert splits.test.input_shape == (1, 28, 28) and set(splits.test.y.unique().tolist()) == set(range(10))


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx_files(tmp_path, compress):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (20, 28, 28)), compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.arange(20) % 10, compress)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (10, 28, 28)), compress)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.arange(10), compress)
    splits = load_dataset(f"mnist:{tmp_path}")
    assert (len(splits.train), len(splits.test)) == (20, 10)
    assert splits.test.y.tolist() == list(range(10))


def test_truncated_idx_is_a_clear_error(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10, 28, 28)), False)
    raw = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw[:-5])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(10), False)
    with pytest.raises(DataError, match="idx header"):
        load_dataset(f"mnist:{tmp_path}")


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 30), ("data_batch_2", 20), ("test_batch", 10)):
        entry = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))[:n]}
        entry[b"labels"] = [i % 10 for i in range(n)]
        with open(tmp_path / name, "wb") as handle:
            pickle.dump(entry, handle)
    splits = load_dataset(f"cifar10:{tmp_path}")
    assert (len(splits.train), len(splits.test)) == (50, 10) and splits.train.input_shape == (3, 32, 32)


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_cifar10_batch_with_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump({b"data": Exploit(), b"labels": [0]}, handle)
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_dataset(f"cifar10:{tmp_path}")
    assert not (tmp_path / "pwned").exists()


def test_imagefolder(tmp_path):
    from PIL import Image

    for split, count in (("train", 3), ("val", 2)):
        for label in ("cat", "dog"):
            folder = tmp_path / split / label / "images"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((16, 16, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    splits = load_dataset(f"imagefolder:{tmp_path}")
    assert (len(splits.train), len(splits.test), splits.train.num_classes) == (6, 4, 2)
    assert splits.train.input_shape == (3, 16, 16)


@pytest.mark.parametrize("source", ["mnist:/definitely/missing", "nosuch", "cifar10:"])
def test_bad_data_sources(source):
    with pytest.raises(DataError):
        load_dataset(source)


def test_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"weight": Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="refused"):
        load_state_dict(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_state_dict_round_trip_and_mismatch(tmp_path):
    net = build("small_cnn", 10, (1, 8, 8))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    classifier = load_classifier("zoo:small_cnn", 10, (1, 8, 8), weights=tmp_path / "w.pt")
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(classifier(x), net(x))
    with pytest.raises(ModelError, match="do not fit"):
        load_classifier("zoo:small_cnn", 3, (1, 8, 8), weights=tmp_path / "w.pt")


def test_torchscript_torchvision_and_python_sources(tmp_path):
    scripted = torch.jit.script(build("small_cnn", 10, (1, 8, 8)))
    scripted.save(str(tmp_path / "m.pt"))
    trusted = {"trust_code": True}
    assert load_classifier(f"torchscript:{tmp_path / 'm.pt'}", 10, (1, 8, 8), **trusted)(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert load_classifier("torchvision:resnet18", 10, (3, 32, 32))(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert load_classifier("python:tests.secsuite.factories:tiny", 10, (1, 8, 8), **trusted)(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    for source, message in (("zoo:nope", "unknown zoo model"), ("python:nope.mod:f", "cannot import"), ("bogus:x", "unknown model source")):
        with pytest.raises(ModelError, match=message):
            load_classifier(source, 10, (1, 8, 8), **trusted)


def test_python_source_is_code_and_needs_trust_code(tmp_path, monkeypatch):
    planted = tmp_path / "planted"
    (tmp_path / "planting_factory.py").write_text(
        f"from pathlib import Path\nPath({str(planted)!r}).touch()\nfrom torch import nn\n"
        "def build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError, match="model.trust_code"):
        load_classifier("python:planting_factory:build", 10, (1, 8, 8))
    assert not planted.exists()
    # The module really runs code at import: with the user's word for it, it does.
    assert load_classifier("python:planting_factory:build", 10, (1, 8, 8), trust_code=True)
    assert planted.exists()


@pytest.mark.parametrize("spelling", ["{dir}/w.safetensors", "safetensors:{dir}/w.bin"])
def test_safetensors_weights(tmp_path, spelling):
    from safetensors.torch import save_file

    net = build("small_cnn", 10, (1, 8, 8))
    weights = spelling.format(dir=tmp_path)
    save_file(net.state_dict(), str(weights).removeprefix("safetensors:"))
    classifier = load_classifier("zoo:small_cnn", 10, (1, 8, 8), weights=weights)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(classifier(x), net(x))


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    save_file(build("small_cnn", 10, (1, 8, 8)).state_dict(), str(tmp_path / "w.safetensors"))
    raw = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelError, match="w.safetensors: not a readable safetensors file"):
        load_state_dict(tmp_path / "w.safetensors")
