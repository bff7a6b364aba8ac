"""Hostile or unlucky input: repeated attacks, non-finite numbers, broken data and models, and `validate` rejecting
exactly what `audit` would, each as one line on stderr, exit code 2, no traceback, nothing overwritten."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import secsuite
from secsuite.cli import main
from tests.secsuite.test_data_and_sources import write_idx

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_repeated_attack_gets_its_own_label_and_the_worst_case_is_below_every_entry(digits_model, digits_eval):
    x, y = digits_eval
    strong = {"name": "pgd", "steps": 20}
    weak = {"name": "pgd", "steps": 1, "random_start": False}
    report = secsuite.evaluate(digits_model, (x[:96], y[:96]), {"eps": [0.1, 0.2]}, attacks=[strong, weak])
    assert [a.name for a in report.attacks] == ["pgd", "pgd#2"]
    assert report.attacks[1].params == {"steps": 1, "random_start": False}
    strong_acc, weak_acc = ({r.eps: r.robust_acc for r in a.results} for a in report.attacks)
    for worst in report.worst_case:
        # The one-step entry is the weaker one; the worst case may not rise above the stronger.
        assert worst.robust_acc <= min(strong_acc[worst.eps], weak_acc[worst.eps]) + 1e-9
        assert set(worst.broken_by) == {"pgd", "pgd#2"}
        clean = report.clean.clean_acc * len(x[:96])
        assert sum(worst.broken_by.values()) == round(clean - worst.robust_acc * len(x[:96]))


def test_weaker_attack_check_names_the_repeated_entry(digits_model, digits_eval):
    x, y = digits_eval
    attacks = ["fgsm", {"name": "pgd", "steps": 10}, {"name": "pgd", "steps": 1, "step_size": 0.01}]
    report = secsuite.evaluate(digits_model, (x[:96], y[:96]), {"eps": [0.2]}, attacks=attacks)
    flagged = [w.message for w in report.warnings if w.code == "weaker_than_weaker_attack"]
    assert len(flagged) == 1 and flagged[0].startswith("pgd#2 leaves"), flagged


# --- The CLI contract for every case below: exit code 2, one line on stderr naming the problem, no traceback, and a
# report already in --out left byte for byte. `expect_error` runs the real entry point in a subprocess, where progress
# output is on, so an error raised after training or evaluation started breaks the one line too. Config cases, which
# need nothing of the process, run through the same `main` in-process (a subprocess costs seconds of torch import);
# there, `audit` must refuse before it loads any data, and a few of them run as subprocesses as well.

OLD_REPORT = b'{"an earlier report": "must survive a failed run"}\n'
# Synthetic 1x8x8 data: the digits loader would add seconds of scikit-learn import to every subprocess.
TINY_RUN = "\n[data]\nsource = \"synthetic\"\nlimit = 16\n[threat]\neps = [0.1]\n[[evaluate]]\nname = \"fgsm\"\n"


def _prepare(tmp_path, config: str, command: str) -> tuple[list[str], Path]:
    (tmp_path / "c.toml").write_text(config)
    report = tmp_path / "out" / "report.json"
    report.parent.mkdir(exist_ok=True)
    report.write_bytes(OLD_REPORT)
    return [command, "c.toml", "--out", "out"] if command == "audit" else [command, "c.toml"], report


def _check(returncode: int, stderr: str, message: str, report: Path) -> None:
    assert returncode == 2, (returncode, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in stderr, stderr
    assert report.read_bytes() == OLD_REPORT


def expect_error(tmp_path, config: str, message: str, command: str = "audit") -> None:
    args, report = _prepare(tmp_path, config, command)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "secsuite", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    _check(done.returncode, done.stderr, message, report)


def expect_error_in_process(tmp_path, monkeypatch, capsys, config: str, message: str, command: str = "audit") -> None:
    def refuse(*_args, **_kwargs):
        raise AssertionError("audit loaded data before refusing the config")

    monkeypatch.setattr("secsuite.audit.load_dataset", refuse)
    monkeypatch.chdir(tmp_path)
    args, report = _prepare(tmp_path, config, command)
    returncode = main(args)
    _check(returncode, capsys.readouterr().err, message, report)


# --- item 5: non-finite numbers

NON_FINITE_CONFIGS = {
    "std nan": ("[model]\nstd = [nan]\n", "model.std.0: Input should be a finite number"),
    "mean inf": ("[model]\nmean = [inf]\n", "model.mean.0: Input should be a finite number"),
    "train_lr inf": ("[model]\ntrain_lr = inf\n", "model.train_lr: Input should be a finite number"),
    "eps inf": ("[threat]\neps = [0.1, inf]\n", "threat.eps.1: Input should be a finite number"),
    "attack parameter nan": ('[[evaluate]]\nname = "pgd"\nstep_size = nan\n', "evaluate.0: step_size must be a finite number"),
    "nested parameter inf": ('[[evaluate]]\nkind = "extraction"\nname = "x"\ndfme = { grad_eps = -inf }\n',
                             "evaluate.0: dfme.grad_eps must be a finite number"),
}


@pytest.mark.parametrize("case", sorted(NON_FINITE_CONFIGS))
def test_non_finite_config_numbers_are_rejected_at_load(case, tmp_path, monkeypatch, capsys):
    text, message = NON_FINITE_CONFIGS[case]
    expect_error_in_process(tmp_path, monkeypatch, capsys, text, message)


def test_nan_weights_are_named(tmp_path):
    from secsuite.zoo import build

    state = build("small_cnn", 10, (1, 8, 8)).state_dict()
    state["0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    expect_error(tmp_path, '[model]\nweights = "nan.pt"\n' + TINY_RUN, "nan.pt: 0.weight holds NaN or infinite values")


def test_nan_logits_are_an_error(tmp_path):
    expect_error(tmp_path, '[model]\nsource = "python:tests.secsuite.hardening_models:nan_logits"\ntrust_code = true\n' + TINY_RUN,
                 "returns NaN or infinite logits (first on evaluation image 0)")


class SqrtInput(torch.nn.Module):
    """sqrt of the pixels: finite logits, but an infinite input gradient wherever a pixel is 0."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.sqrt())


def test_non_finite_gradients_are_warned_not_counted_as_zero(digits_model, digits_eval):
    x, y = digits_eval
    report = secsuite.evaluate(SqrtInput(digits_model), (x[:32], y[:32]), {"eps": [0.1]}, attacks=["fgsm"])
    assert torch.isfinite(digits_model(x[:32].sqrt())).all()
    assert report.clean.non_finite_gradient_fraction == 1.0  # every digit has zero-valued (background) pixels
    assert report.clean.zero_gradient_fraction == 0.0
    assert "non_finite_gradients" in {w.code for w in report.warnings}
    plain = secsuite.evaluate(digits_model, (x[:32], y[:32]), {"eps": [0.1]}, attacks=["fgsm"])
    assert plain.clean.non_finite_gradient_fraction == 0.0 and not plain.warnings


def test_classifier_rejects_non_finite_normalisation():
    from secsuite.model import Classifier

    for mean, std in (([float("inf")], [1.0]), ([0.0], [float("nan")]), ([0.0], [float("inf")])):
        with pytest.raises(ValueError, match="finite"):
            Classifier(torch.nn.Flatten(), 10, (1, 8, 8), mean, std)


# --- item 7: data and model contract errors. The data folders are written in the real on-disk formats.

def png_bytes(seed: int) -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_folder(root: Path, classes: dict[str, int], test_classes: dict[str, int] | None = None) -> None:
    for split, counts in (("train", classes), ("val", test_classes or classes)):
        for name, count in counts.items():
            (root / split / name).mkdir(parents=True)
            for index in range(count):
                (root / split / name / f"{index}.png").write_bytes(png_bytes(index))


def corrupt_image(root: Path) -> str:
    image_folder(root, {"a": 3, "b": 3})
    (root / "train" / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return "train/b/1.png: cannot read image"


def truncated_image(root: Path) -> str:
    image_folder(root, {"a": 3, "b": 3})
    path = root / "val" / "a" / "2.png"
    path.write_bytes(path.read_bytes()[:60])
    return "val/a/2.png: cannot read image"


def directory_named_like_an_image(root: Path) -> str:
    image_folder(root, {"a": 3, "b": 3})
    (root / "train" / "a" / "x.png").mkdir()
    return "train/a/x.png: not an image file"


def mnist_files(root: Path, labels=np.arange(20) % 10, n_images: int = 20) -> None:
    root.mkdir()
    write_idx(root / "t10k-images-idx3-ubyte.gz", np.zeros((n_images, 28, 28)), compress=True)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", labels, compress=True)


def bad_gzip(root: Path) -> str:
    mnist_files(root)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"plain bytes, not gzip")
    return "t10k-images-idx3-ubyte.gz: cannot read"


def truncated_gzip(root: Path) -> str:
    mnist_files(root)
    path = root / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    return "t10k-labels-idx1-ubyte.gz: cannot read"


def mnist_label_out_of_range(root: Path) -> str:
    mnist_files(root, labels=np.array([3] * 19 + [12]))
    return "t10k-labels-idx1-ubyte.gz: labels must be in [0, 10), got range [3, 12]"


def zero_images(root: Path) -> str:
    mnist_files(root, labels=np.zeros(0), n_images=0)
    return "split has no images"


def garbage_cifar_batch(root: Path) -> str:
    root.mkdir()
    (root / "test_batch").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return "test_batch: not a CIFAR-10 python batch"


def cifar_batch_of_wrong_size(root: Path) -> str:
    root.mkdir()
    with open(root / "test_batch", "wb") as handle:
        pickle.dump({b"data": np.zeros((4, 1000), dtype=np.uint8), b"labels": [0, 1, 2, 3]}, handle)
    return "test_batch: expected N x 3072 pixel bytes and N labels"


def training_labels_beyond_the_model(root: Path) -> str:
    # Three training classes, two evaluation classes: only the training labels exceed num_classes = 2.
    image_folder(root, {"a": 3, "b": 3, "c": 3}, test_classes={"a": 3, "b": 3})
    return "imagefolder/train: labels must be in [0, 2), got range [0, 2]"


DATA_CASES = {
    "corrupt image": ("imagefolder", corrupt_image),
    "truncated image": ("imagefolder", truncated_image),
    "directory named x.png": ("imagefolder", directory_named_like_an_image),
    "bad gzip": ("mnist", bad_gzip),
    "truncated gzip": ("mnist", truncated_gzip),
    "mnist label 12": ("mnist", mnist_label_out_of_range),
    "zero images": ("mnist", zero_images),
    "garbage cifar batch": ("cifar10", garbage_cifar_batch),
    "cifar batch of wrong size": ("cifar10", cifar_batch_of_wrong_size),
    "training labels out of range": ("imagefolder", training_labels_beyond_the_model),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_broken_data_is_one_line_naming_the_file(case, tmp_path):
    kind, make = DATA_CASES[case]
    message = make(tmp_path / "data")
    num_classes = "num_classes = 2\n" if case == "training labels out of range" else ""
    config = f'[model]\ntrain_epochs = 1\n{num_classes}[data]\nsource = "{kind}:data"\nlimit = 4\n[[evaluate]]\nname = "fgsm"\n'
    expect_error(tmp_path, config, message)


MODEL_CASES = {
    "fewer outputs than classes": ('source = "python:tests.secsuite.hardening_models:five_outputs"',
                                   "returns outputs of shape (2, 5) for 2 images; expected (2, 10)"),
    "more outputs than classes": ('source = "python:tests.secsuite.hardening_models:twelve_outputs"',
                                  "returns outputs of shape (2, 12) for 2 images; expected (2, 10)"),
    "module raises at import": ('source = "python:exploding:factory"', "importing exploding failed: RuntimeError: kaboom"),
    "factory calls sys.exit": ('source = "python:sys:exit"', "sys:exit() failed: SystemExit"),
    "negative input shape": ("input_shape = [1, -8, 8]", "model.input_shape.1: Input should be greater than 0"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_broken_model_is_one_line_naming_it(case, tmp_path):
    (tmp_path / "exploding.py").write_text("raise RuntimeError('kaboom')\n")
    line, message = MODEL_CASES[case]
    expect_error(tmp_path, f"[model]\n{line}\ntrust_code = true\n" + TINY_RUN, message)


# --- item 8: `validate` refuses exactly what `audit` would, and `audit` refuses it before loading data or training.

PLAN_CASES = {
    "unknown model": ('[model]\nsource = "zoo:resnet99"\n', "unknown zoo model 'resnet99'"),
    "unknown torchvision model": ('[model]\nsource = "torchvision:resnet99"\n', "unknown torchvision model 'resnet99'"),
    "missing data folder": ('[data]\nsource = "mnist:no/such/dir"\n', "data directory not found: no/such/dir"),
    "missing weights": ('[model]\nweights = "no_such.pt"\n', "weights file not found: no_such.pt"),
    "certify method": ('[[evaluate]]\nkind = "certify"\nname = "auto_lirpa"\nmethods = ["IBP", "CROWN-XL"]\n', "got 'CROWN-XL'"),
    "mpc parties": ('[[evaluate]]\nkind = "mpc"\nname = "crypten"\nparties = 1\n', "evaluate mpc: parties: Input should be greater than or equal to 2"),
    "mpc variant": ('[[evaluate]]\nkind = "mpc"\nname = "crypten"\nvariants = ["fast+quad"]\n', "mpc variant 'fast+quad'"),
    "backdoor option": ('[[evaluate]]\nkind = "backdoor"\nname = "ebyd"\nunlearn_stepz = 3\n', "unexpected keyword argument 'unlearn_stepz'"),
    "backdoor plant target": ('[[evaluate]]\nkind = "backdoor"\nname = "ebyd"\nplant_target = 10\n', "target label must be in [0, 10)"),
    "extraction method": ('[[evaluate]]\nkind = "extraction"\nname = "x"\nmethods = ["dfmx"]\n', "got ['dfmx']"),
    "extraction method option": ('[[evaluate]]\nkind = "extraction"\nname = "x"\nmethods = ["dfme"]\ndfme = { nz = 0 }\n',
                                 "extraction dfme: nz must be a positive integer"),
    "extraction output": ('[[evaluate]]\nkind = "extraction"\nname = "x"\noutput = "logits"\n', "output must be one of"),
    "unlearnable mix": ('[[evaluate]]\nkind = "unlearnable"\nname = "cuda"\nmix = [2.0]\n', "unlearnable: mix must be in [0, 1]"),
    "unlearnable arch": ('[[evaluate]]\nkind = "unlearnable"\nname = "cuda"\narch = "lenet"\n', "unknown arch 'lenet'"),
    "art __class__": ('[[evaluate]]\nkind = "art"\nname = "__class__"\n', "unknown ART evasion attack '__class__'"),
    "attack eps": ('[[evaluate]]\nname = "pgd"\neps = 0.3\n', "evaluate.0: eps is set once for every attack in [threat]"),
    "attack norm": ('[[evaluate]]\nname = "fgsm"\nnorm = "l2"\n', "evaluate.0: norm is set once"),
    "attack targeted": ('[[evaluate]]\nkind = "art"\nname = "FastGradientMethod"\ntargeted = true\n', "evaluate.0: targeted is set once"),
    "attack seed": ('[[evaluate]]\nname = "cw"\nseed = 3\n', "evaluate.0: seed is set once"),
    "eps inf": ("[threat]\neps = [inf]\n", "threat.eps.0: Input should be a finite number"),
    "eps true": ("[threat]\neps = true\n", "threat.eps.0: Input should be a valid number"),
    "linf eps 2": ("[threat]\neps = [0.1, 2.0]\n", "an linf budget of 2 exceeds 1"),
}


@pytest.mark.parametrize("command", ["validate", "audit"])
@pytest.mark.parametrize("case", sorted(PLAN_CASES))
def test_validate_and_audit_refuse_the_same_config_before_loading_data(case, command, tmp_path, monkeypatch, capsys):
    text, message = PLAN_CASES[case]
    expect_error_in_process(tmp_path, monkeypatch, capsys, text, message, command)


@pytest.mark.parametrize("case,command", [("unknown model", "validate"), ("attack eps", "validate"),
                                          ("missing data folder", "audit"), ("mpc parties", "audit")])
def test_validate_and_audit_refuse_through_the_entry_point(case, command, tmp_path):
    text, message = PLAN_CASES[case]
    expect_error(tmp_path, text, message, command)


def test_l2_budget_above_one_is_allowed():
    from secsuite.threat import ThreatModel

    assert ThreatModel(norm="l2", eps=[0.5, 2.0]).eps == [0.5, 2.0]
