"""Shared benchmark helpers: the benchmark model/data, timing, and result files."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from secsuite.data import Dataset, load_dataset
from secsuite.model import Classifier
from secsuite.training import train_classifier
from secsuite.zoo import build

BENCH_DIR = Path(__file__).resolve().parent
MNIST_DIR = BENCH_DIR.parent / "data" / "mnist"


def benchmark_data() -> tuple[Dataset, Dataset, str]:
    """Real MNIST (8,000/2,000 split) when present, else digits."""
    if (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        splits = load_dataset(f"mnist:{MNIST_DIR}")
        return splits.train, splits.test, "mnist"
    splits = load_dataset("digits")
    return splits.train, splits.test, "digits"


def trained_small_cnn(train: Dataset, epochs: int = 5, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    classifier = Classifier(build("small_cnn", train.num_classes, train.input_shape), train.num_classes, train.input_shape, name="small_cnn")
    train_classifier(classifier, train, epochs=epochs, seed=seed, batch_size=128, description="training benchmark model")
    return classifier.eval()


def timed(fn, repeats: int = 1):
    """Best-of-`repeats` wall time and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def raw_forward_backward_pass(classifier: Classifier, x: torch.Tensor, y: torch.Tensor) -> None:
    """One forward + input-gradient backward pass over x: the floor every gradient attack pays per step."""
    x_grad = x.detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(classifier(x_grad), y, reduction="sum")
    torch.autograd.grad(loss, x_grad)


def raw_forward_backward_time(classifier: Classifier, x: torch.Tensor, y: torch.Tensor, passes: int = 10, repeats: int = 5) -> float:
    """Seconds per raw pass, from the best of `repeats` runs of `passes` consecutive passes (like an attack's loop)."""
    raw_forward_backward_pass(classifier, x, y)
    seconds, _ = timed(lambda: [raw_forward_backward_pass(classifier, x, y) for _ in range(passes)], repeats)
    return seconds / passes


def write_results(name: str, payload: dict) -> Path:
    payload = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "device": "cuda" if torch.cuda.is_available() else "cpu"}, **payload}
    path = BENCH_DIR / "results" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in header]] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
