"""Backdoor benchmark: BadNets / Blended at 10% poisoning on MNIST, EBYD detection on clean and backdoored models, removal.

Run: OMP_NUM_THREADS=1 SECSUITE_PROGRESS=0 python -m bench.backdoor [--data mnist:data/mnist] [--epochs 10]
Writes bench/results/backdoor.json and prints a table. `--cases 0,1 --out A.json` runs a subset (to spread the
cases over processes) and `--merge A.json B.json` joins such runs into the results file.

Cases 5, 6 and 7 are clean models (seeds 2 and 3, and seed 4 under-trained on 4000 images for 6 epochs,
the regime of the tests) used only to calibrate the detection thresholds (defenses.ebyd.calibrate); the verdicts of cases 0-4 are computed with those thresholds, so the
false-positive check (clean seeds 0 and 1) never sees its own numbers. Each case records its evidence;
the verdicts are applied when all rows are present (in-process or at --merge). Removal runs on
BadNets t=0 (case 2) whatever the verdict, and the table says whether it was flagged.
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

from attacks.backdoor import BackdoorAttack, BadNets, Blended, bn_cnn, train_model  # noqa: E402
from defenses.ebyd import EBYD, Evidence, calibrate, clean_subset, der, is_backdoored  # noqa: E402
from secsuite.data import load_dataset  # noqa: E402
from secsuite.model import Classifier  # noqa: E402

ROOT = Path(__file__).resolve().parent


CALIBRATION = (5, 6, 7)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=f"mnist:{ROOT.parent / 'data/mnist'}")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--clean-size", type=int, default=300, help="defender's clean images (taken from the training split)")
    parser.add_argument("--nc-steps", type=int, default=100)
    parser.add_argument("--finetune-epochs", type=int, default=20, help="fine-tuning of each pruned model on the clean set (0 = paper)")
    parser.add_argument("--bn-eval", action="store_true", help="official BatchNorm-in-eval unlearning (default here: BN updating)")
    parser.add_argument("--cases", default="5,6,7,0,1,2,3,4")
    parser.add_argument("--out", default=str(ROOT / "results/backdoor.json"))
    parser.add_argument("--merge", nargs="*")
    args = parser.parse_args()
    if args.merge:
        runs = [json.loads(Path(path).read_text()) for path in args.merge]
        result = {**runs[0], "rows": sorted((row for run in runs for row in run["rows"]), key=lambda row: row["case"])}
        finish(result, args.out)
        return
    data = load_dataset(args.data)
    shape = data.train.input_shape
    clean = clean_subset(data.train, args.clean_size / len(data.train), seed=123)
    cases = [("clean seed 0", None, 0), ("clean seed 1", None, 1),
             ("badnets t=0", BackdoorAttack(BadNets(3), target=0, rate=0.1), 0),
             ("blended t=0", BackdoorAttack(Blended(0.2), target=0, rate=0.1), 0),
             ("badnets t=3", BackdoorAttack(BadNets(3), target=3, rate=0.1), 0),
             ("clean seed 2 (calibration)", None, 2), ("clean seed 3 (calibration)", None, 3),
             ("clean seed 4, 4000 img, 6 ep (calibration)", None, 4)]
    budgets = {7: (4000, 6)}  # (training images, epochs) where a case differs from the default
    rows = []
    for case in map(int, args.cases.split(",")):
        name, attack, seed = cases[case]
        size, epochs = budgets.get(case, (len(data.train), args.epochs))
        torch.manual_seed(seed)
        model = Classifier(bn_cnn(10, shape), 10, shape, name=name)
        tick = time.perf_counter()
        if attack is None:
            train_model(model, data.train.subset(size), epochs=epochs, lr=2e-3, seed=seed)
        else:
            attack.train(model, data.train, epochs=args.epochs, lr=2e-3, seed=seed)
        train_s = time.perf_counter() - tick
        row = {"case": case, "model": name, "clean_acc": model.accuracy(data.test.x, data.test.y), "train_s": train_s}
        if attack is not None:
            row.update(asr=attack.metrics(model, data.test).asr, target=attack.target)
        # The official BN-in-eval unlearning, for comparison: which label does it expose?
        row["exposed_label_bn_eval"] = EBYD(bn_eval=True).expose_label(model, clean) if not args.bn_eval else None
        defense = EBYD(bn_eval=args.bn_eval, nc_steps=args.nc_steps, remove=False, finetune_epochs=args.finetune_epochs)
        tick = time.perf_counter()
        exposure = defense.expose(model, clean)
        ev = exposure.evidence
        row.update(evidence=vars(ev), exposed_label=ev.label, collapse=ev.collapse, collapse_steps=ev.collapse_steps,
                   trigger_ratio=ev.trigger_ratio, blend_ratio=ev.blend_ratio, ebyd_s=time.perf_counter() - tick)
        if case == 2:
            tick = time.perf_counter()
            removal = defense.remove_backdoor(model, exposure, clean)
            after = attack.metrics(removal.classifier, data.test)
            row.update(removal_threshold=removal.chosen.threshold, pruned=removal.chosen.pruned, finetuned=removal.chosen.finetuned,
                       removal_sweep=[vars(step) for step in removal.sweep], clean_acc_after=after.clean_acc, asr_after=after.asr,
                       der=der(row["clean_acc"], after.clean_acc, row["asr"], after.asr), removal_s=time.perf_counter() - tick)
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k not in ("evidence", "removal_sweep")}), flush=True)
    result = {"data": args.data, "epochs": args.epochs, "schedule": "Adam lr 2e-3, cosine decay to 0", "clean_size": args.clean_size,
              "model": "bn_cnn width 16", "nc_steps": args.nc_steps, "bn_eval": args.bn_eval, "finetune_epochs": args.finetune_epochs,
              "rows": rows}
    finish(result, args.out)


def finish(result: dict, out: str) -> None:
    """Calibrate on the calibration clean models (when present) and apply the verdicts to every row."""
    rows = result["rows"]
    calibration = [Evidence(**row["evidence"]) for row in rows if row["case"] in CALIBRATION]
    if len(calibration) == len(CALIBRATION):
        thresholds = calibrate(calibration)
        result["thresholds"] = {**vars(thresholds), "calibrated_on": [row["model"] for row in rows if row["case"] in CALIBRATION]}
        for row in rows:
            row["flagged"] = is_backdoored(Evidence(**row["evidence"]), thresholds)
    Path(out).write_text(json.dumps(result, indent=2))
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    header = (f"{'model':42} {'CA':>6} {'ASR':>6} {'flag':>5} {'label':>5} {'collapse':>8} {'steps':>5} {'mask r':>6} {'blend r':>7} "
              f"{'CA after':>8} {'ASR after':>9} {'DER':>5}")
    print(header)
    fmt = lambda v: f"{100 * v:.1f}" if isinstance(v, float) else "-"  # noqa: E731
    for r in rows:
        print(f"{r['model']:42} {fmt(r['clean_acc']):>6} {fmt(r.get('asr')):>6} {str(r.get('flagged', '?')):>5} {r['exposed_label']:>5} "
              f"{r['collapse']:>8.2f} {r['collapse_steps']:>5} {r['trigger_ratio']:>6.2f} {r['blend_ratio']:>7.2f} "
              f"{fmt(r.get('clean_acc_after')):>8} {fmt(r.get('asr_after')):>9} {r.get('der', float('nan')):>5.2f}")


if __name__ == "__main__":
    main()
