"""Backdoor benchmark: BadNets / Blended at 10% poisoning on MNIST, EBYD detection on clean and backdoored models, removal.

Run: OMP_NUM_THREADS=1 SECSUITE_PROGRESS=0 python -m bench.backdoor [--data mnist:../shared/data/mnist] [--epochs 6]
Writes bench/results/backdoor.json and prints a table. `--cases 0,1 --out A.json` runs a subset (to spread the
cases over processes) and `--merge A.json B.json` joins such runs into the results file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

# Run as a script, bench/ would shadow the top-level packages (bench/attacks.py is not `attacks`).
sys.path[0:1] = [str(Path(__file__).resolve().parents[1])]

from attacks.backdoor import BackdoorAttack, BadNets, Blended, bn_cnn  # noqa: E402
from defenses.ebyd import EBYD, clean_subset, der  # noqa: E402
from secsuite.data import load_dataset  # noqa: E402
from secsuite.model import Classifier  # noqa: E402
from secsuite.training import train_classifier  # noqa: E402

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=f"mnist:{ROOT.parent.parent / 'shared/data/mnist'}")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--clean-size", type=int, default=300, help="defender's clean images (taken from the training split)")
    parser.add_argument("--nc-steps", type=int, default=100)
    parser.add_argument("--bn-eval", action="store_true", help="official BatchNorm-in-eval unlearning (default here: BN updating)")
    parser.add_argument("--cases", default="0,1,2,3,4")
    parser.add_argument("--out", default=str(ROOT / "results/backdoor.json"))
    parser.add_argument("--merge", nargs="*")
    args = parser.parse_args()
    if args.merge:
        runs = [json.loads(Path(path).read_text()) for path in args.merge]
        result = {**runs[0], "rows": sorted((row for run in runs for row in run["rows"]), key=lambda row: row["case"])}
        Path(args.out).write_text(json.dumps(result, indent=2))
        print_table(result["rows"])
        return
    data = load_dataset(args.data)
    shape = data.train.input_shape
    clean = clean_subset(data.train, args.clean_size / len(data.train), seed=123)
    cases = [("clean seed 0", None, 0), ("clean seed 1", None, 1),
             ("badnets t=0", BackdoorAttack(BadNets(3), target=0, rate=0.1), 0),
             ("blended t=0", BackdoorAttack(Blended(0.2), target=0, rate=0.1), 0),
             ("badnets t=3", BackdoorAttack(BadNets(3), target=3, rate=0.1), 0)]
    rows = []
    for case in map(int, args.cases.split(",")):
        name, attack, seed = cases[case]
        torch.manual_seed(seed)
        model = Classifier(bn_cnn(10, shape), 10, shape, name=name)
        tick = time.perf_counter()
        if attack is None:
            train_classifier(model, data.train, epochs=args.epochs, lr=2e-3, seed=seed)
        else:
            attack.train(model, data.train, epochs=args.epochs, lr=2e-3, seed=seed)
        train_s = time.perf_counter() - tick
        row = {"case": case, "model": name, "clean_acc": model.accuracy(data.test.x, data.test.y), "train_s": train_s}
        if attack is not None:
            row.update(asr=attack.metrics(model, data.test).asr, target=attack.target)
        # The official BN-in-eval unlearning, for comparison: which label does it expose?
        row["exposed_label_bn_eval"] = EBYD(bn_eval=True).expose_label(model, clean) if not args.bn_eval else None
        defense = EBYD(bn_eval=args.bn_eval, nc_steps=args.nc_steps,
                       remove=attack is not None and attack.trigger.name == "badnets" and attack.target == 0)
        tick = time.perf_counter()
        exposure = defense.expose(model, clean)
        ev = exposure.evidence
        row.update(flagged=exposure.backdoored, exposed_label=ev.label, collapse=ev.collapse, collapse_steps=ev.collapse_steps,
                   trigger_l1=ev.trigger_l1, reference_l1=ev.reference_l1, trigger_ratio=ev.trigger_ratio, ebyd_s=time.perf_counter() - tick)
        if exposure.removal is not None:
            after = attack.metrics(exposure.removal.classifier, data.test)
            row.update(removal_threshold=exposure.removal.chosen.threshold, pruned=exposure.removal.chosen.pruned,
                       clean_acc_after=after.clean_acc, asr_after=after.asr,
                       der=der(row["clean_acc"], after.clean_acc, row["asr"], after.asr))
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    result = {"data": args.data, "epochs": args.epochs, "clean_size": args.clean_size, "model": "bn_cnn width 16",
              "nc_steps": args.nc_steps, "bn_eval": args.bn_eval, "thresholds": vars(EBYD().thresholds), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    header = f"{'model':14} {'CA':>6} {'ASR':>6} {'flag':>5} {'label':>5} {'collapse':>8} {'ratio':>6} {'CA after':>8} {'ASR after':>9} {'DER':>5}"
    print(header)
    fmt = lambda v: f"{100 * v:.1f}" if isinstance(v, float) else "-"  # noqa: E731
    for r in rows:
        print(f"{r['model']:14} {fmt(r['clean_acc']):>6} {fmt(r.get('asr')):>6} {str(r['flagged']):>5} {r['exposed_label']:>5} "
              f"{r['collapse']:>8.2f} {r['trigger_ratio']:>6.2f} {fmt(r.get('clean_acc_after')):>8} {fmt(r.get('asr_after')):>9} "
              f"{r.get('der', float('nan')):>5.2f}")


if __name__ == "__main__":
    main()
