"""Adversarial training on MNIST (8,000 train / 2,000 test, small CNN, Linf eps 0.1): clean and PGD-20 accuracy.

    OMP_NUM_THREADS=2 .venv/bin/python bench/defenses.py [--mnist DIR] [--epochs 3] [--train-steps 5]

Prints a table and writes bench/results/defenses.json. The undefended model is trained with
plain Adam; PGD-AT and TRADES fine-tune it (the audit's `[[defend]]` path does the same).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

# Run as a script, this file's folder is first on sys.path and its name would shadow the `defenses` package.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from attacks.evasion.pgd import PGD  # noqa: E402
from defenses import make_defense  # noqa: E402
from secsuite.data import load_dataset  # noqa: E402
from secsuite.model import Classifier  # noqa: E402
from secsuite.threat import ThreatModel  # noqa: E402
from secsuite.training import train_classifier  # noqa: E402
from secsuite.zoo import build  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def evaluate(classifier: Classifier, data, eps: float, batch_size: int = 500) -> dict:
    tick = time.perf_counter()
    robust = torch.cat([PGD(eps=eps, steps=20, seed=0).attack(classifier, data.x[i : i + batch_size], data.y[i : i + batch_size]).robust.cpu()
                        for i in range(0, len(data), batch_size)])
    return {"clean_acc": classifier.accuracy(data.x, data.y), "pgd20_acc": robust.float().mean().item(), "eval_time_s": time.perf_counter() - tick}


def torchattacks_pgd20(classifier: Classifier, data, eps: float, batch_size: int = 500) -> float | None:
    """The undefended model's PGD-20 accuracy from an independent implementation, to rule out a weak attack."""
    try:
        import torchattacks
    except ImportError:
        return None
    attack = torchattacks.PGD(classifier, eps=eps, alpha=2.5 * eps / 20, steps=20, random_start=True)
    correct = 0
    for i in range(0, len(data), batch_size):
        x, y = data.x[i : i + batch_size].to(classifier.device), data.y[i : i + batch_size].to(classifier.device)
        correct += (classifier.predict(attack(x, y)) == y).sum().item()
    return correct / len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mnist", default=str(ROOT / "data" / "mnist"))
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--base-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--beta", type=float, default=6.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "defenses.json"))
    args = parser.parse_args()

    data = load_dataset(f"mnist:{args.mnist}")
    torch.manual_seed(0)
    model = Classifier(build("small_cnn", 10, data.train.input_shape), 10, data.train.input_shape, name="mnist_cnn")
    tick = time.perf_counter()
    train_classifier(model, data.train, epochs=args.base_epochs, seed=0, description="undefended")
    rows = [{"model": "undefended", "training_time_s": time.perf_counter() - tick, **evaluate(model, data.test, args.eps)}]
    rows[0]["pgd20_acc_torchattacks"] = torchattacks_pgd20(model, data.test, args.eps)
    print(rows[-1], flush=True)
    threat = ThreatModel(norm="linf", eps=[args.eps])
    common = dict(epochs=args.epochs, steps=args.train_steps, warmup_epochs=args.warmup_epochs)
    for name, params in (("pgd_at", common), ("trades", {**common, "beta": args.beta})):
        result = make_defense(name, **params).fit(model, data.train, threat)
        rows.append({"model": name, "params": params, "training_time_s": result.training_time_s, **evaluate(result.classifier, data.test, args.eps)})
        print(rows[-1], flush=True)

    print(f"\nMNIST {len(data.train)}/{len(data.test)}, small CNN, Linf eps {args.eps}, PGD-20 (step 2.5*eps/20, random start)")
    print(f"{'model':<12} {'clean':>7} {'PGD-20':>7} {'train s':>8}")
    for row in rows:
        print(f"{row['model']:<12} {100 * row['clean_acc']:>6.1f}% {100 * row['pgd20_acc']:>6.1f}% {row['training_time_s']:>8.1f}")
    if rows[0]["pgd20_acc_torchattacks"] is not None:
        print(f"undefended PGD-20 accuracy with torchattacks.PGD: {100 * rows[0]['pgd20_acc_torchattacks']:.1f}%")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "benchmark": "defenses", "dataset": f"mnist {len(data.train)}/{len(data.test)}", "model": "small_cnn", "norm": "linf", "eps": args.eps,
        "args": vars(args), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
