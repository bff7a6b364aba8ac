"""secsuite FGSM / PGD-10 / APGD-CE / CW against ART and torchattacks: one process, one model, the same images.

    uv run python bench/attacks.py [--n 512] [--cw-steps 5] [--cw-iters 20]

Prints a table and writes bench/results/attacks.json. The floor is one raw forward+backward pass.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attacks.evasion import APGD, FGSM, PGD, CarliniWagnerL2  # noqa: E402
from attacks.evasion.art_adapter import art_estimator  # noqa: E402
from bench.common import benchmark_data, print_table, raw_forward_backward_time, timed, trained_small_cnn, write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--cw-steps", type=int, default=9, help="binary-search steps for both CW implementations")
    parser.add_argument("--cw-iters", type=int, default=50, help="iterations per binary-search step for both")
    parser.add_argument("--cw-repeats", type=int, default=3, help="secsuite CW runs (median time; the floor is re-timed around each)")
    parser.add_argument("--apgd-steps", type=int, default=100)
    parser.add_argument("--skip-art-cw", action="store_true", help="ART's CW is slow (minutes)")
    args = parser.parse_args()

    train, test, data_name = benchmark_data()
    model = trained_small_cnn(train)
    x, y = test.x[: args.n], test.y[: args.n]
    eps, step_size, steps = args.eps, args.eps / 4, 10
    floor = raw_forward_backward_time(model, x, y)
    rows: list[dict] = []

    clean_correct = model.predict(x) == y
    flipped: dict[tuple[str, str], torch.Tensor] = {}
    norms_of: dict[tuple[str, str], torch.Tensor] = {}

    def record(library: str, attack: str, seconds: float, x_adv: torch.Tensor, norm: str, extra: dict | None = None) -> None:
        """Success = a clean-correct image is now misclassified; norms over those successes."""
        x_adv = x_adv.detach().cpu().float()
        success = clean_correct & (model.predict(x_adv) != y)
        delta = (x_adv - x).flatten(1)
        norms = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        flipped[(library, attack)], norms_of[(library, attack)] = success, norms
        median = float(norms[success].median()) if success.any() else None
        rows.append({"library": library, "attack": attack, "time_s": seconds, "success_rate": float(success.sum()) / int(clean_correct.sum()),
                     "median_norm": median, "norm": norm, "time_over_floor": seconds / floor, **(extra or {})})

    one_hot = np.eye(10, dtype=np.float32)[y.numpy()]
    estimator = art_estimator(model)

    seconds, result = timed(lambda: FGSM(eps=eps).attack(model, x, y), 3)
    record("secsuite", "FGSM", seconds, result.x_adv, "linf")
    # This machine's speed drifts between runs, so ratios to the floor come from interleaved
    # measurements: the floor is re-timed right before each attack run and the median ratio is kept.
    pgd_runs = []
    for _ in range(5):
        floor_now = raw_forward_backward_time(model, x, y, repeats=1)
        seconds, result = timed(lambda: PGD(eps=eps, steps=steps, step_size=step_size).attack(model, x, y))
        pgd_runs.append((seconds, seconds / (10 * floor_now)))
    seconds = min(s for s, _ in pgd_runs)
    record("secsuite", "PGD-10", seconds, result.x_adv, "linf", {"ratio_to_10_raw_passes": statistics.median(r for _, r in pgd_runs)})
    apgd_floor = raw_forward_backward_time(model, x, y, repeats=1)
    seconds, result = timed(lambda: APGD(eps=eps, steps=args.apgd_steps).attack(model, x, y))
    record("secsuite", f"APGD-CE-{args.apgd_steps}", seconds, result.x_adv, "linf",
           {"ratio_to_steps_plus_1_raw_passes": seconds / ((args.apgd_steps + 1) * apgd_floor)})
    cw = CarliniWagnerL2(binary_search_steps=args.cw_steps, max_iterations=args.cw_iters)
    cw_runs = []
    for _ in range(args.cw_repeats):
        floor_before = raw_forward_backward_time(model, x, y, repeats=1)
        seconds, result = timed(lambda: cw.attack(model, x, y))
        floor_cw = (floor_before + raw_forward_backward_time(model, x, y, repeats=1)) / 2
        cw_runs.append((seconds, seconds / (cw.iterations_run * floor_cw)))
    record("secsuite", "CW-L2", statistics.median(s for s, _ in cw_runs), result.x_adv, "l2",
           {"iterations_run": cw.iterations_run, "ratio_to_iterations_x_raw_pass": statistics.median(r for _, r in cw_runs),
            "runs_s": [s for s, _ in cw_runs]})

    from art.attacks.evasion import AutoProjectedGradientDescent, CarliniL2Method, FastGradientMethod, ProjectedGradientDescent

    seconds, x_adv = timed(lambda: FastGradientMethod(estimator, eps=eps, batch_size=args.n).generate(x.numpy(), y=one_hot), 3)
    record("ART", "FGSM", seconds, torch.from_numpy(x_adv), "linf")
    pgd = ProjectedGradientDescent(estimator, eps=eps, eps_step=step_size, max_iter=steps, batch_size=args.n, verbose=False)
    seconds, x_adv = timed(lambda: pgd.generate(x.numpy(), y=one_hot), 3)
    record("ART", "PGD-10", seconds, torch.from_numpy(x_adv), "linf")
    art_apgd = AutoProjectedGradientDescent(estimator, eps=eps, eps_step=2 * eps, max_iter=args.apgd_steps, nb_random_init=1,
                                            batch_size=args.n, loss_type="cross_entropy", verbose=False)
    seconds, x_adv = timed(lambda: art_apgd.generate(x.numpy(), y=one_hot))
    record("ART", f"APGD-CE-{args.apgd_steps}", seconds, torch.from_numpy(x_adv), "linf")
    if not args.skip_art_cw:
        art_cw = CarliniL2Method(estimator, binary_search_steps=args.cw_steps, max_iter=args.cw_iters, batch_size=128, verbose=False)
        seconds, x_adv = timed(lambda: art_cw.generate(x.numpy(), y=one_hot))
        record("ART", "CW-L2", seconds, torch.from_numpy(x_adv), "l2")

    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    if torchattacks is not None:
        for name, attack, norm in (("FGSM", torchattacks.FGSM(model, eps=eps), "linf"),
                                   ("PGD-10", torchattacks.PGD(model, eps=eps, alpha=step_size, steps=steps), "linf"),
                                   ("CW-L2 (c=1, no search)", torchattacks.CW(model, c=1, steps=args.cw_steps * args.cw_iters, lr=0.01), "l2")):
            seconds, x_adv = timed(lambda: attack(x, y), 3 if name != "CW-L2 (c=1, no search)" else 1)
            record("torchattacks", name, seconds, x_adv, norm)

    print(f"data {data_name}, {args.n} images, eps {eps} (Linf), raw forward+backward pass {1000 * floor:.1f} ms, "
          f"CW budget {args.cw_steps}x{args.cw_iters}")
    print_table(["library", "attack", "time (s)", "x floor", "success", "median norm"],
                [[r["library"], r["attack"], r["time_s"], r["time_over_floor"], r["success_rate"], r["median_norm"] if r["median_norm"] is not None else "-"] for r in rows])
    by = {(r["library"], r["attack"]): r for r in rows}
    checks = {
        "pgd10_over_10_raw_passes": by[("secsuite", "PGD-10")]["ratio_to_10_raw_passes"],
        "cw_over_iterations_x_raw_pass": by[("secsuite", "CW-L2")]["ratio_to_iterations_x_raw_pass"],
    }
    apgd_name = f"APGD-CE-{args.apgd_steps}"
    checks["apgd_success_minus_art"] = by[("secsuite", apgd_name)]["success_rate"] - by[("ART", apgd_name)]["success_rate"]
    checks["apgd_speedup_over_art"] = by[("ART", apgd_name)]["time_s"] / by[("secsuite", apgd_name)]["time_s"]
    checks["apgd_over_steps_plus_1_raw_passes"] = by[("secsuite", apgd_name)]["ratio_to_steps_plus_1_raw_passes"]
    if ("ART", "CW-L2") in by:
        ours, art = by[("secsuite", "CW-L2")], by[("ART", "CW-L2")]
        both = flipped[("secsuite", "CW-L2")] & flipped[("ART", "CW-L2")]
        checks.update({"cw_speedup_over_art": art["time_s"] / ours["time_s"], "cw_success_minus_art": ours["success_rate"] - art["success_rate"],
                       "cw_examples_both_succeeded": int(both.sum())})
        if both.any():
            # Median L2 on the examples both broke: a like-for-like comparison of perturbation size.
            checks["cw_median_l2_over_art_on_common"] = float(norms_of[("secsuite", "CW-L2")][both].median() / norms_of[("ART", "CW-L2")][both].median())
    for key, value in checks.items():
        print(f"{key}: {value:.3f}")
    path = write_results("attacks", {"data": data_name, "n": args.n, "eps": eps, "raw_forward_backward_s": floor,
                                     "cw_budget": [args.cw_steps, args.cw_iters], "rows": rows, "checks": checks})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
