"""Certified training and certify overhead on MNIST (8000 train / 2000 test, Linf eps 0.1).

1. A normally trained small CNN: clean and IBP/CROWN-IBP verified accuracy at eps 0.1 (expected < 5% verified).
2. The same architecture trained with CertifiedTraining (CROWN-IBP, train eps 0.11): clean and verified accuracy,
   training wall time (target: verified >= 88%, clean >= 95%, under 10 CPU minutes).
3. Overhead of `Certifier.certify` over calling auto_LiRPA's compute_bounds directly on the same batches (<= 5%).

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/certified.py [--epochs N] [--method IBP|CROWN-IBP] [--mnist DIR]
Times are CPU seconds of this process (time.process_time, one thread), not wall time on a shared machine.
Writes bench/results/certified.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# Run as a script, this file's folder is first on sys.path and bench/defenses.py would shadow the `defenses` package.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from defenses.certified import Certifier  # noqa: E402
from defenses.certified.certify import margin_spec, perturbation  # noqa: E402
from defenses.certified.compat import lirpa  # noqa: E402
from defenses.certified.models import ibp_cnn  # noqa: E402
from defenses.certified.training import CertifiedTraining  # noqa: E402
from secsuite.data import load_dataset  # noqa: E402
from secsuite.model import Classifier  # noqa: E402
from secsuite.threat import ThreatModel  # noqa: E402
from secsuite.training import train_classifier  # noqa: E402
from secsuite.zoo import build  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EPS = 0.1


def make_classifier(model: str, seed: int) -> Classifier:
    # ibp_cnn: the strided 4-layer CNN of the IBP papers. small_cnn_avg: the zoo CNN with average pooling
    # (auto_LiRPA bounds average pooling exactly; MaxPool needs a looser relaxation and has no alpha-CROWN).
    torch.manual_seed(seed)
    net = ibp_cnn(10, (1, 28, 28)) if model == "ibp_cnn" else build("small_cnn", 10, (1, 28, 28), pool="avg")
    return Classifier(net, 10, (1, 28, 28), name=model)


def verified(classifier: Classifier, x: torch.Tensor, y: torch.Tensor, method: str) -> float:
    return Certifier(classifier, batch_size=500).certify(x, y, EPS, method, "linf").verified_acc


def overhead(classifier: Classifier, x: torch.Tensor, y: torch.Tensor, method: str, repeats: int) -> dict:
    """Best-of-`repeats` wall time of our certify vs auto_LiRPA called directly with the same C and batches."""
    certifier = Certifier(classifier, batch_size=500)
    L = lirpa()

    def direct() -> None:
        for start in range(0, len(x), 500):
            xb, yb = x[start : start + 500], y[start : start + 500]
            bounded_x = L.BoundedTensor(xb, perturbation(xb, EPS, "linf"))
            certifier.bounded.compute_bounds(x=(bounded_x,), C=margin_spec(yb, 10), method=method, bound_upper=False)

    def ours() -> None:
        certifier.certify(x, y, EPS, method, "linf")

    # CPU time: the machine is shared, so wall time measures the neighbours as much as the code.
    times = {"direct": [], "ours": []}
    for _ in range(repeats):
        for name, fn in (("direct", direct), ("ours", ours)):
            tick = time.process_time()
            fn()
            times[name].append(time.process_time() - tick)
    direct_s, ours_s = min(times["direct"]), min(times["ours"])
    return {"method": method, "n": len(x), "direct_s": direct_s, "ours_s": ours_s, "overhead": ours_s / direct_s - 1}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mnist", default=str(ROOT / "data/mnist"))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--ramp-epochs", type=int, default=25)
    parser.add_argument("--method", default="IBP", choices=["IBP", "CROWN-IBP"])
    parser.add_argument("--model", default="ibp_cnn", choices=["ibp_cnn", "small_cnn_avg"])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--kappa-end", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench/results/certified.json"))
    args = parser.parse_args()
    data = load_dataset(f"mnist:{args.mnist}")
    x_test, y_test = data.test.x, data.test.y
    threat = ThreatModel(norm="linf", eps=[EPS], seed=args.seed)
    results: dict = {"eps": EPS, "n_train": len(data.train), "n_test": len(data.test), "threads": torch.get_num_threads(),
                     "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu": platform.processor() or platform.machine()}

    normal = make_classifier(args.model, args.seed)
    tick = time.process_time()
    train_classifier(normal, data.train, epochs=10, lr=1e-3, seed=args.seed, description="normal training")
    results["normal"] = {"training_cpu_s": time.process_time() - tick, "clean_acc": normal.accuracy(x_test, y_test),
                         "verified_ibp": verified(normal, x_test, y_test, "IBP"),
                         "verified_crown_ibp": verified(normal, x_test, y_test, "CROWN-IBP")}

    defense = CertifiedTraining(method=args.method, eps=EPS, epochs=args.epochs, ramp_epochs=args.ramp_epochs, lr=args.lr,
                                kappa_end=args.kappa_end, seed=args.seed)
    tick = time.process_time()
    result = defense.fit(make_classifier(args.model, args.seed), data.train, threat)
    certified = result.classifier
    results["certified"] = {"params": defense.params(), "training_cpu_s": time.process_time() - tick,
                            "training_wall_s": result.training_time_s,
                            "clean_acc": certified.accuracy(x_test, y_test),
                            "verified_ibp": verified(certified, x_test, y_test, "IBP"),
                            "verified_crown_ibp": verified(certified, x_test, y_test, "CROWN-IBP"),
                            "log": result.log}
    results["overhead"] = [overhead(certified, x_test, y_test, method, repeats=3) for method in ("IBP", "CROWN-IBP")]

    results["model"] = args.model
    print(f"MNIST {len(data.train)}/{len(data.test)}, {args.model}, Linf eps {EPS}, {torch.get_num_threads()} thread(s)")
    print(f"{'model':<22}{'clean':>8}{'IBP verified':>14}{'CROWN-IBP verified':>20}{'train CPU s':>13}")
    for name in ("normal", "certified"):
        row = results[name]
        print(f"{name:<22}{row['clean_acc']:>8.3f}{row['verified_ibp']:>14.3f}{row['verified_crown_ibp']:>20.3f}{row['training_cpu_s']:>13.1f}")
    print(f"{'certify overhead':<22}{'n':>8}{'direct CPU s':>14}{'ours CPU s':>20}{'overhead':>10}")
    for row in results["overhead"]:
        print(f"{row['method']:<22}{row['n']:>8}{row['direct_s']:>14.3f}{row['ours_s']:>20.3f}{100 * row['overhead']:>9.1f}%")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
