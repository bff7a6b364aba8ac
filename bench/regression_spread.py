"""Spread of the project's regression metrics over training seeds and thread counts; writes the baselines from it.

tests/attacks/evasion/test_regression.py guards FGSM/PGD strength on the digits CNN (trained with seed 0). On another
machine, seed 0 trains a slightly different model (other float rounding), so a baseline copied from one machine's
output is not a baseline. This script trains the same model with seeds 0-4 at 1 and 2 threads, measures every
guarded metric, and writes `.secsuite/baselines.json` with the mean as the reference and a tolerance of
1.5x the largest drop below the mean seen over those runs (at least 0.02).

Run: OMP_NUM_THREADS=1 python -m bench.regression_spread   (about 4 CPU minutes)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

import secsuite
import secsuite.testing
from bench.common import write_results
from secsuite.data import load_dataset
from secsuite.model import Classifier
from secsuite.files import write_atomic
from secsuite.training import train_classifier
from secsuite.zoo import build

THREAT = {"norm": "linf", "eps": [0.05, 0.1, 0.2]}
ATTACKS = ["fgsm", {"name": "pgd", "steps": 10}]
MARGIN, FLOOR = 1.5, 0.02
BASELINES = Path(__file__).resolve().parents[1] / ".secsuite" / "baselines.json"


def measure(seed: int, threads: int) -> dict[str, dict[str, float]]:
    """The two metric sets of test_attack_strength_matches_baseline, for a model trained with `seed`."""
    torch.set_num_threads(threads)
    splits = load_dataset("digits")
    torch.manual_seed(seed)
    model = Classifier(build("small_cnn", 10, splits.train.input_shape), 10, splits.train.input_shape, name="digits_cnn")
    train_classifier(model, splits.train, epochs=30, seed=seed)
    model.eval()
    report = secsuite.evaluate(model, (splits.test.x[:192], splits.test.y[:192]), THREAT, attacks=ATTACKS)
    accuracy = secsuite.testing.metrics(report)
    success = {f"{e.name}_success@{r.eps:g}": r.success_rate for e in report.attacks for r in e.results}
    return {"digits_cnn_accuracy": accuracy, "digits_cnn_attack_success": success}


def baseline(runs: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean of each metric, and a one-sided tolerance from the largest drop below that mean."""
    means = {m: sum(r[m] for r in runs) / len(runs) for m in runs[0]}
    tolerance = {m: max(FLOOR, math.ceil(100 * MARGIN * max(means[m] - r[m] for r in runs)) / 100) for m in means}
    return means, tolerance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--no-write-baselines", action="store_true")
    args = parser.parse_args()
    runs = [{"seed": s, "threads": t, **measure(s, t)} for s in range(args.seeds) for t in (1, 2)]
    entries = {}
    for name in ("digits_cnn_accuracy", "digits_cnn_attack_success"):
        means, tolerance = baseline([run[name] for run in runs])
        spread = {m: [min(r[name][m] for r in runs), max(r[name][m] for r in runs)] for m in means}
        entries[name] = {"metrics": means, "tolerance": tolerance, "spread": spread}
        print(f"{name}:")
        for m in means:
            print(f"  {m:24s} mean {means[m]:.4f}  range [{spread[m][0]:.4f}, {spread[m][1]:.4f}]  tolerance {tolerance[m]:.2f}")
    write_results("regression_spread", {"runs": runs, "baselines": entries})
    if not args.no_write_baselines:
        data = {name: {k: entry[k] for k in ("metrics", "tolerance")} for name, entry in entries.items()}
        write_atomic(BASELINES, json.dumps(data, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
