"""secsuite's AutoAttack (standard version) against the official code (pyautoattack): one process, one model, the same images.

    uv run python bench/autoattack.py [--n 100] [--linf-eps 0.1] [--l2-eps 1.0] [--steps 100] [--queries 5000]

Both run AutoAttack's standard cascade (APGD-CE, APGD-T, FAB-T, Square) at its defaults on a small CNN trained on
MNIST, on CPU. Prints a table and writes bench/results/autoattack.json: robust accuracy, wall time, and forward and
backward passes (images through the model) of each, in total and per attack, and the ratio of the wall times. The
reference's per-attack figures are read when it logs the robust accuracy after each attack. Square spends --queries
evaluations per image on both sides (the reference's n_queries is set 2 lower: it adds the clean and starting ones).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attacks.evasion import run_autoattack  # noqa: E402
from bench.common import benchmark_data, print_table, trained_small_cnn, write_results  # noqa: E402
from secsuite.model import Classifier  # noqa: E402

REFERENCE_NORMS = {"linf": "Linf", "l2": "L2"}


class _PerAttackLog(logging.Handler):
    """Reads the reference's "robust accuracy after ATTACK" lines, with the model's pass counters at that moment."""

    def __init__(self, model: Classifier):
        super().__init__(logging.DEBUG)
        self.model, self.marks = model, []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("robust accuracy after "):
            self.marks.append((message.split()[3].rstrip(":").lower(), time.perf_counter(), *self.model.counters()))


def run_reference(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, steps: int, queries: int) -> dict:
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    from pyautoattack.fab_pt import FABAttack_PT
    from pyautoattack.square import SquareAttack

    reference_norm = REFERENCE_NORMS[norm]
    adversary = AutoAttack(model, norm=reference_norm, eps=eps, version="standard", seed=0)
    # Rebuilt with the settings given (the components fix their checkpoint schedules at construction); Square gets
    # queries - 2 because the reference adds the clean and starting evaluations to its n_queries.
    adversary.apgd = APGDAttack(model, n_iter=steps, eps=eps, norm=reference_norm, seed=0)
    adversary.apgd_targeted = APGDAttack_targeted(model, n_iter=steps, eps=eps, norm=reference_norm, seed=0, n_target_classes=9)
    adversary.fab = FABAttack_PT(model, n_iter=steps, eps=eps, norm=reference_norm, seed=0, n_target_classes=9)
    adversary.square = SquareAttack(model, p_init=0.8, n_queries=queries - 2, eps=eps, norm=reference_norm, seed=0, resc_schedule=False)
    log = _PerAttackLog(model)
    adversary.logger.addHandler(log)
    adversary.logger.setLevel(logging.DEBUG)
    model.reset_counters()
    start = time.perf_counter()
    try:
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
    finally:
        adversary.logger.removeHandler(log)
    seconds = time.perf_counter() - start
    forward, backward = model.counters()
    robust = (model.predict(x_adv) == y).float().mean().item()
    per_attack, previous = {}, (start, 0, 0)
    for name, at, fwd, bwd in log.marks:
        per_attack[name] = {"seconds": at - previous[0], "forward": fwd - previous[1], "backward": bwd - previous[2]}
        previous = (at, fwd, bwd)
    return {"robust_acc": robust, "seconds": seconds, "forward": forward, "backward": backward, "per_attack": per_attack}


def run_ours(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, steps: int, queries: int) -> dict:
    model.reset_counters()
    start = time.perf_counter()
    result = run_autoattack(model, x, y, eps, norm, steps=steps, n_queries=queries, batch_size=len(x))
    seconds = time.perf_counter() - start
    return {"robust_acc": result.autoattack_acc, "seconds": seconds, "forward": result.number_forward_passes,
            "backward": result.number_backward_passes, "broken_by": result.broken_by,
            "per_attack": {name: {"seconds": result.seconds[name], "forward": result.passes[name][0], "backward": result.passes[name][1]}
                           for name in result.seconds}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="test images")
    parser.add_argument("--linf-eps", type=float, default=0.1)
    parser.add_argument("--l2-eps", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=100, help="iterations of APGD-CE, each APGD-T run and each FAB-T run")
    parser.add_argument("--queries", type=int, default=5000, help="Square's evaluations per image")
    args = parser.parse_args()

    train, test, data_name = benchmark_data()
    model = trained_small_cnn(train)
    x, y = test.x[: args.n], test.y[: args.n]
    rows, results = [], []
    for norm, eps in (("linf", args.linf_eps), ("l2", args.l2_eps)):
        theirs = run_reference(model, x, y, eps, norm, args.steps, args.queries)
        ours = run_ours(model, x, y, eps, norm, args.steps, args.queries)
        ratio = ours["seconds"] / theirs["seconds"]
        for name, measured in (("secsuite", ours), ("pyautoattack", theirs)):
            rows.append([norm, eps, name, f"{measured['robust_acc']:.2%}", round(measured["seconds"], 1), measured["forward"], measured["backward"],
                         f"{ratio:.2f}" if name == "secsuite" else ""])
        results.append({"norm": norm, "eps": eps, "secsuite": ours, "pyautoattack": theirs, "time_ratio": ratio,
                        "equal_robust_acc": abs(ours["robust_acc"] - theirs["robust_acc"]) <= 0.005})
    print_table(["norm", "eps", "implementation", "robust acc", "seconds", "forward", "backward", "time ratio"], rows)
    path = write_results("autoattack", {"data": data_name, "model": "small_cnn (5 epochs)", "n": len(x), "steps": args.steps,
                                        "queries": args.queries, "version": "standard", "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
