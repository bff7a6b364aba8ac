"""Trustworthy numbers on the user's own model and data: the subset that is evaluated, the model's mode, the data
and model types a user has, and the report flags that say when a number means nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

import secsuite
from attacks.evasion import PGD
from secsuite.audit import defense_warnings
from secsuite.data import Dataset
from secsuite.errors import DataError
from secsuite.model import Classifier
from secsuite.report import DefenseEntry
from secsuite.threat import DefendSpec, parse_config
from secsuite.zoo import build
from defenses.base import flat_sweeps


def class_sorted(counts: list[int]) -> Dataset:
    """Labels in blocks, as an image folder stores them: all of class 0, then all of class 1, ..."""
    y = torch.cat([torch.full((n,), label) for label, n in enumerate(counts)])
    return Dataset(torch.rand(len(y), 1, 4, 4), y, len(counts), "sorted")


def test_limit_is_a_seeded_class_stratified_subset():
    data = class_sorted([30] * 10)
    subset = data.subset(50, seed=0)
    assert subset.class_counts() == [5] * 10
    assert torch.equal(subset.x, data.subset(50, seed=0).x)
    assert not torch.equal(subset.x, data.subset(50, seed=1).x)
    # Unequal classes keep their shares (100:50:10 of 16 -> 10:5:1).
    assert class_sorted([100, 50, 10]).subset(16, seed=3).class_counts() == [10, 5, 1]


def write_image_folder(root, per_class: dict[str, int], classes: int = 3) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for index in range(n):
                pixels = np.clip(rng.normal(60 + 70 * label, 20, (8, 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")


def image_folder_audit(tmp_path, limit: int):
    config = parse_config({
        "model": {"source": "zoo:small_cnn", "num_classes": 3, "train_epochs": 1},
        "data": {"source": f"imagefolder:{tmp_path / 'images'}", "limit": limit},
        "threat": {"eps": [0.1]}, "evaluate": [{"name": "fgsm"}],
    })
    return secsuite.audit(config, write=False)


def test_audit_of_a_class_sorted_folder_evaluates_every_class_and_says_how_many(tmp_path):
    write_image_folder(tmp_path / "images", {"train": 5, "test": 10})
    report = image_folder_audit(tmp_path, limit=6)
    assert report.data.class_counts == [2, 2, 2]
    assert (report.data.n_eval, report.data.n_test, report.data.limit) == (6, 30, 6)
    assert "per class: [2, 2, 2]" in secsuite.report.to_markdown(report)
    assert "limit_exceeds_split" not in {w.code for w in report.warnings}
    larger = image_folder_audit(tmp_path, limit=100)
    assert larger.data.n_eval == 30
    assert "limit_exceeds_split" in {w.code for w in larger.warnings}


def bn_net() -> nn.Module:
    """An untrained CNN whose BatchNorm running statistics are far from any batch's own, so that
    train mode (batch statistics) and eval mode (running statistics) give different predictions."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.05, 3)
    return net


def test_evaluation_runs_in_eval_mode_and_gives_the_caller_its_modes_back(digits):
    net = bn_net()
    x, y = digits.test.x[:64], digits.test.y[:64]
    with torch.no_grad():
        eval_acc = (net.eval()(x).argmax(1) == y).float().mean().item()
        train_acc = (net.train()(x).argmax(1) == y).float().mean().item()
    assert eval_acc != train_acc  # the two modes really differ on this model
    net.train()
    net[1].eval()  # a frozen BatchNorm inside a model in train mode: a mixed state that must survive
    running_mean = net[1].running_mean.clone()
    report = secsuite.evaluate(net, (x, y), {"eps": [0.05]}, attacks=["fgsm"])
    assert report.clean.clean_acc == pytest.approx(eval_acc)
    assert [m.training for m in net.modules()] == [True, True, False, True, True, True]
    assert torch.equal(net[1].running_mean, running_mean)
    PGD(eps=0.05, steps=2)(net, x, y)
    assert [m.training for m in net.modules()] == [True, True, False, True, True, True]


class PilImages(torch.utils.data.Dataset):
    """Like torchvision's ImageFolder without a transform: (PIL image, int label) items and a `classes` list."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        from PIL import Image

        self.images = [Image.fromarray((255 * image[0]).round().byte().numpy()) for image in x]
        self.labels = y.tolist()
        self.classes = [str(c) for c in range(10)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]


def test_evaluate_takes_the_torch_datasets_a_user_has(digits_model, digits):
    net = digits_model.net  # a plain nn.Module taking [0,1] images
    x = torch.round(255 * digits.test.x[:48]) / 255  # exactly what 8-bit image files hold
    y = digits.test.y[:48]
    settings = {"threat": {"eps": [0.1]}, "attacks": ["fgsm"]}
    expected = secsuite.evaluate(net, (x, y), **settings)
    pairs = TensorDataset(torch.cat([x, x]), torch.cat([y, y]))
    for data in (Subset(pairs, range(48)), TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=10), PilImages(x, y)):
        report = secsuite.evaluate(net, data, **settings)
        assert report.model.num_classes == 10  # from the model's output, or the ImageFolder-like `classes`
        assert report.data.class_counts == torch.bincount(y, minlength=10).tolist()
        assert report.clean.clean_acc == expected.clean.clean_acc > 0.9
        assert report.worst_case == expected.worst_case
    with pytest.raises(DataError, match=r"Tensor item 0: expected \(image, label\) pairs, got a Tensor"):
        secsuite.evaluate(net, x, **settings)
    with pytest.raises(DataError, match="a torch Dataset or DataLoader of .image, label., or a tuple .x, y. of tensors; got a list"):
        secsuite.evaluate(net, [x, y], **settings)


def test_attacks_take_a_plain_module_and_are_callable_like_torchattacks(digits_model, digits_eval):
    x, y = digits_eval
    net = digits_model.net
    attack = PGD(eps=0.1, steps=10)
    x_adv = attack(net, x, y)
    assert torch.equal(x_adv, attack.attack(digits_model, x, y).x_adv)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():  # deterministic (seed 0): 100% clean, 65.6% on x_adv
        assert (net(x_adv).argmax(1) == y).float().mean() < (net(x).argmax(1) == y).float().mean() - 0.2
    assert net.training is False  # the fixture's eval mode, given back


def test_a_model_at_chance_level_is_flagged_and_a_trained_one_is_not(digits, digits_model):
    # Untrained small_cnn on the 359 digits test images, seeds 0-5: clean accuracy 5.3-12.5%; the flag's bound
    # (majority class 14.2% plus three binomial standard errors) is 19.7%. The trained model scores ~98%.
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        untrained = Classifier(build("small_cnn", 10, (1, 8, 8)), 10, (1, 8, 8))
        report = secsuite.evaluate(untrained, digits.test, {"eps": [0.1]}, attacks=["fgsm"])
        assert "chance_level" in {w.code for w in report.warnings}
    trained = secsuite.evaluate(digits_model, digits.test, {"eps": [0.1]}, attacks=["fgsm"])
    assert "chance_level" not in {w.code for w in trained.warnings}


def test_an_l2_attack_does_not_set_the_linf_worst_case(digits_model, digits_eval):
    x, y = digits_eval[0][:64], digits_eval[1][:64]
    threat = {"norm": "linf", "eps": [0.1, 0.2]}
    cw = {"name": "cw", "binary_search_steps": 5, "max_iterations": 50}
    with_cw = secsuite.evaluate(digits_model, (x, y), threat, attacks=[cw, "fgsm"])
    fgsm_only = secsuite.evaluate(digits_model, (x, y), threat, attacks=["fgsm"])
    cw_entry, fgsm = with_cw.attacks
    # Some of CW's L2 examples fall inside the Linf ball (robust 95.3% and 81.2% of 64 against 100% clean), so
    # counted first in the cascade it would be credited with breaking them: the worst case must come from FGSM alone.
    assert all(r.robust_acc < with_cw.clean.clean_acc for r in cw_entry.results)
    assert with_cw.worst_case == fgsm_only.worst_case and set(with_cw.worst_case[0].broken_by) == {"fgsm"}
    assert not cw_entry.in_worst_case and cw_entry.attack_norm == "l2" and fgsm.in_worst_case
    assert "other_norm_attack" in {w.code for w in with_cw.warnings}
    assert "not in worst case" in secsuite.report.to_markdown(with_cw)


def defense_entry(clean_acc_delta: float, details: dict | None = None) -> DefenseEntry:
    return DefenseEntry(name="d", clean_acc=0.9 + clean_acc_delta, clean_acc_delta=clean_acc_delta, attacks=[], worst_case=[],
                        worst_case_delta=[], training_time_s=0.0, details=details or {})


def test_a_defense_that_costs_too_much_clean_accuracy_is_flagged_at_the_configured_bound():
    codes = lambda spec, entry: [w.code for w in defense_warnings(spec, entry)]  # noqa: E731
    assert codes(DefendSpec(name="d"), defense_entry(-0.2)) == ["clean_accuracy_drop"]
    assert codes(DefendSpec(name="d"), defense_entry(-0.05)) == []
    assert codes(DefendSpec(name="d", max_clean_drop=3), defense_entry(-0.05)) == ["clean_accuracy_drop"]
    assert "max_clean_drop" not in DefendSpec(name="d", max_clean_drop=3).params()


def test_a_sweep_that_changed_nothing_is_flagged():
    flat = [{"alpha": a, "clean_acc": 0.8, "robust_acc": 0.4, "chosen": a == 0} for a in (0.0, 0.5, 1.0)]
    moving = [dict(row, clean_acc=0.8 + 0.05 * i) for i, row in enumerate(flat)]
    assert flat_sweeps({"alpha_sweep": flat, "mrc_table": flat}) == ["alpha"]
    assert flat_sweeps({"alpha_sweep": moving}) == []
    assert [w.code for w in defense_warnings(DefendSpec(name="rift"), defense_entry(0.0, {"alpha_sweep": flat}))] == ["flat_sweep"]
