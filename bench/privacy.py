"""Privacy benchmark: CUDA unlearnable data and model extraction under a query budget.

  OMP_NUM_THREADS=1 SECSUITE_PROGRESS=0 python bench/privacy.py [--budget 6000] [--seeds 3]

1. CUDA on digits: clean test accuracy of small_cnn trained on clean, mix 0.5 and mix 1.0
   protected training sets, plain (ERM) and PGD adversarial training.
2. DFME vs CaBaGe against a digits small_cnn victim (probabilities), same budget, mean over seeds.
3. Knockoff with a 2,000-image surrogate pool against an MNIST small_cnn victim (real MNIST
   8,000/2,000 split; skipped with a note when data/mnist is absent).
Writes bench/results/privacy.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

# bench/ holds a module named attacks.py: put the repository root first so `attacks` is the package.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from attacks.extraction import DFME, BlackBoxVictim, CaBaGe, Knockoff, Probe  # noqa: E402
from attacks.unlearnable import CUDA, TrainingRecipe, train_and_test  # noqa: E402
from secsuite.data import load_dataset  # noqa: E402
from secsuite.model import Classifier  # noqa: E402
from secsuite.training import train_classifier  # noqa: E402
from secsuite.zoo import build  # noqa: E402

MNIST_DIR = ROOT / "data" / "mnist"


def victim_model(data, epochs: int, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    model = Classifier(build("small_cnn", data.train.num_classes, data.train.input_shape), data.train.num_classes,
                       data.train.input_shape, name="victim")
    train_classifier(model, data.train, epochs=epochs, seed=seed, description="victim")
    return model.eval()


def clone_for(victim: Classifier, seed: int) -> Classifier:
    torch.manual_seed(1000 + seed)
    return Classifier(build("small_cnn", victim.num_classes, victim.input_shape), victim.num_classes, victim.input_shape)


def bench_cuda(epochs: int, at_eps: float) -> list[dict]:
    data = load_dataset("digits")
    rows = []
    for recipe in (TrainingRecipe(epochs=epochs), TrainingRecipe(epochs=epochs, adversarial_eps=at_eps, adversarial_steps=3)):
        clean = train_and_test(data.train, data.test, recipe)
        rows.append({"regime": recipe.regime, "mix": 0.0, "clean_test_acc": clean, "drop": 0.0})
        for mix in (0.5, 1.0):
            acc = train_and_test(CUDA(key=0, mix=mix).protect(data.train), data.test, recipe)
            rows.append({"regime": recipe.regime, "mix": mix, "clean_test_acc": acc, "drop": clean - acc})
            print(f"cuda {recipe.regime} mix {mix}: {clean:.3f} -> {acc:.3f}", flush=True)
    return rows


def bench_data_free(budget: int, seeds: int) -> dict:
    data = load_dataset("digits")
    victim = victim_model(data, epochs=30)
    probe = Probe(victim, data.test)
    out = {"victim_acc": victim.accuracy(data.test.x, data.test.y), "budget": budget, "runs": []}
    for seed in range(seeds):
        for name, method in (("dfme", DFME(seed=seed)), ("cabage", CaBaGe(seed=seed))):
            result = method.extract(BlackBoxVictim(victim, budget), clone_for(victim, seed), probe)
            out["runs"].append({"method": name, "seed": seed, "queries_spent": result.queries_spent, "clone_acc": result.clone_acc,
                                "agreement": result.agreement, "time_s": result.time_s,
                                "curve": [[p.queries, p.clone_acc, p.agreement] for p in result.curve]})
            print(f"{name} seed {seed}: clone acc {result.clone_acc:.3f} agreement {result.agreement:.3f} "
                  f"({result.queries_spent} queries, {result.time_s:.0f}s)", flush=True)
    for name in ("dfme", "cabage"):
        accs = [r["clone_acc"] for r in out["runs"] if r["method"] == name]
        out[f"{name}_mean_clone_acc"] = statistics.mean(accs)
    return out


def bench_knockoff(pool_size: int) -> dict:
    if not MNIST_DIR.is_dir():
        return {"skipped": f"{MNIST_DIR} not found"}
    data = load_dataset(f"mnist:{MNIST_DIR}")
    victim = victim_model(data, epochs=5)
    probe = Probe(victim, data.test)
    # The attacker's pool: images of the training split the victim was not necessarily trained
    # on in this order; its labels are never used, only the victim's answers.
    pool = data.train.subset(pool_size)
    result = Knockoff(pool, epochs=10, seed=0).extract(BlackBoxVictim(victim, pool_size), clone_for(victim, 0), probe)
    print(f"knockoff pool {pool_size}: agreement {result.agreement:.3f}, clone acc {result.clone_acc:.3f}", flush=True)
    return {"data": "mnist 8000/2000", "victim_acc": victim.accuracy(data.test.x, data.test.y), "pool_size": pool_size,
            "queries_spent": result.queries_spent, "clone_acc": result.clone_acc, "agreement": result.agreement,
            "time_s": result.time_s, "curve": [[p.queries, p.clone_acc, p.agreement] for p in result.curve]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=6000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cuda-epochs", type=int, default=20)
    parser.add_argument("--at-eps", type=float, default=0.1)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--only", choices=["cuda", "extraction", "knockoff"], action="append")
    args = parser.parse_args()
    parts = args.only or ["cuda", "extraction", "knockoff"]
    started = time.perf_counter()
    results: dict = {"torch_threads": torch.get_num_threads()}
    if "cuda" in parts:
        results["cuda"] = bench_cuda(args.cuda_epochs, args.at_eps)
    if "extraction" in parts:
        results["data_free"] = bench_data_free(args.budget, args.seeds)
    if "knockoff" in parts:
        results["knockoff"] = bench_knockoff(args.pool)
    results["wall_time_s"] = time.perf_counter() - started
    out = ROOT / "bench" / "results" / "privacy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))

    print("\n| benchmark | setting | result |\n|---|---|---|")
    for row in results.get("cuda", []):
        print(f"| CUDA digits | {row['regime']}, mix {row['mix']:g} | clean test acc {100 * row['clean_test_acc']:.1f}% "
              f"(drop {100 * row['drop']:.1f} pts) |")
    if "data_free" in results:
        df = results["data_free"]
        for name in ("dfme", "cabage"):
            print(f"| {name} digits | budget {df['budget']}, {args.seeds} seeds | mean clone acc {100 * df[f'{name}_mean_clone_acc']:.1f}% "
                  f"(victim {100 * df['victim_acc']:.1f}%) |")
    if "knockoff" in results:
        ko = results["knockoff"]
        print(f"| knockoff | {ko.get('data', '-')}, pool {args.pool} | " + (ko["skipped"] if "skipped" in ko else
              f"agreement {100 * ko['agreement']:.1f}%, clone acc {100 * ko['clone_acc']:.1f}% |"))
    print(f"\nwritten {out} in {results['wall_time_s']:.0f}s")


if __name__ == "__main__":
    main()
