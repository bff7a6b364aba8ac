"""Benchmark: zoo ViT trained on digits, its MPC-friendly variants fine-tuned by distillation, and an
MPCViT-searched model (mu=0.5), all run under real 2-party CrypTen on the same private batch.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/mpc.py [--epochs 30] [--batch 16]
Prints a table and writes bench/results/mpc.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mpc import private_inference_many, to_variant
from mpc.layers import fine_tune
from mpc.search import mpcvit_search
from secsuite.data import load_dataset
from secsuite.model import Classifier
from secsuite.training import train_classifier
from secsuite.zoo import build


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    data = load_dataset("digits")
    shape = data.train.input_shape
    torch.manual_seed(0)
    original = Classifier(build("vit_small", 10, shape, patch=2), 10, shape, name="softmax+gelu")
    train_classifier(original, data.train, epochs=args.epochs, seed=0)
    models = [original.eval()]
    for attention in ("relu_softmax", "scale", "2quad"):
        variant = to_variant(original, attention, "quad", name=f"{attention}+quad")
        fine_tune(variant, original, data.train, epochs=args.fine_tune_epochs, seed=0)
        models.append(variant.eval())
    searched = mpcvit_search(to_variant(original, activation="quad"), data.train, mu=0.5, search_epochs=args.fine_tune_epochs,
                             retrain_epochs=args.fine_tune_epochs, teacher=original).classifier
    searched.name = "mpcvit mu=0.5+quad"
    models.append(searched.eval())
    results = private_inference_many(models, data.test.x[: args.batch])
    rows = []
    for model, r in zip(models, results):
        rows.append({"variant": r.name, "clean_acc": model.accuracy(data.test.x, data.test.y), "mb": r.total_bytes / 1e6,
                     "rounds": r.max_rounds, "wall_s": r.wall_time_s, "agreement": r.argmax_agreement, "max_abs_error": r.max_abs_error,
                     "lan_s": r.modelled_latency_s["lan"], "wan_s": r.modelled_latency_s["wan"]})
    base = rows[0]
    print(f"{'variant':22} {'acc':>6} {'MB':>8} {'bytes x':>8} {'rounds':>6} {'wall s':>7} {'speed x':>7} {'agree':>6} {'max err':>9}")
    for row in rows:
        row["bytes_reduction"] = base["mb"] / row["mb"]
        row["speedup"] = base["wall_s"] / row["wall_s"]
        print(f"{row['variant']:22} {row['clean_acc']:6.3f} {row['mb']:8.2f} {row['bytes_reduction']:8.1f} {row['rounds']:6d} "
              f"{row['wall_s']:7.3f} {row['speedup']:7.1f} {row['agreement']:6.3f} {row['max_abs_error']:9.3g}")
    out = Path(__file__).parent / "results" / "mpc.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"batch": args.batch, "epochs": args.epochs, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
