"""Fast checks of the EBYD building blocks on digits and small tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.backdoor import bn_cnn
from defenses.ebyd import EBYD, CleanUnlearning, Evidence, MaskPruning, NeuralCleanse, anomaly_index, calibrate, der, is_backdoored
from defenses.ebyd.detection import Thresholds
from secsuite.data import load_dataset
from secsuite.model import Classifier
from secsuite.training import train_classifier


@pytest.fixture(scope="module")
def digits_model():
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = Classifier(bn_cnn(10, (1, 8, 8)), 10, (1, 8, 8))
    train_classifier(model, data.train, epochs=10, lr=2e-3)
    return model, data


def test_der_matches_the_formula():
    assert der(0.95, 0.95, 1.0, 0.0) == 1.0
    assert der(0.95, 0.95, 1.0, 1.0) == 0.5
    assert der(0.95, 0.85, 1.0, 0.05) == pytest.approx((0.95 - 0.10 + 1) / 2)
    assert der(0.90, 0.95, 0.5, 0.9) == 0.5  # gains in CA and losses in ASR do not count


@pytest.mark.parametrize("build, word", [
    (lambda: CleanUnlearning(lr=0), "lr"), (lambda: CleanUnlearning(max_steps=0), "max_steps"),
    (lambda: CleanUnlearning(stop_acc=1.5), "stop_acc"), (lambda: NeuralCleanse(steps=0), "steps"),
    (lambda: NeuralCleanse(success=0), "success"), (lambda: MaskPruning(thresholds=[1.2]), "thresholds"),
    (lambda: EBYD(clean_fraction=0), "clean_fraction"), (lambda: EBYD(reference_labels=0), "reference_labels"),
    (lambda: EBYD(unlearn_lr=-1), "lr"), (lambda: calibrate([]), "clean"), (lambda: NeuralCleanse(shape="circle"), "shape"),
    (lambda: EBYD(blend_ratio=0), "blend_ratio"), (lambda: calibrate([Evidence(0, 0.5, 1, 0.0, 1.0, [1.0])], cap=0), "cap"),
])
def test_bad_parameters_raise_value_error_naming_them(build, word):
    with pytest.raises(ValueError, match=word):
        build()


def test_unlearning_is_gradient_ascent(digits_model):
    """Clean accuracy must fall to the stop level; descent would keep it near the trained accuracy."""
    model, data = digits_model
    clean = data.train.subset(200)
    before = model.accuracy(clean.x, clean.y)
    result = CleanUnlearning(lr=3e-4, max_steps=200).run(model, clean)
    assert before >= 0.9 and result.clean_acc[0] == pytest.approx(before)
    assert result.clean_acc[-1] <= 0.2 and result.stop_step < 200
    assert result.collapse >= 0.5  # predictions pile onto one class, as the exposure expects
    assert model.accuracy(clean.x, clean.y) == pytest.approx(before)  # the input model is untouched


def test_bn_eval_switch_controls_the_running_statistics(digits_model):
    model, data = digits_model
    clean = data.train.subset(100)
    stats = lambda m: torch.cat([l.running_mean for l in m.net.modules() if isinstance(l, nn.BatchNorm2d)])  # noqa: E731
    frozen = CleanUnlearning(max_steps=3, stop_acc=0).run(model, clean).model
    updated = CleanUnlearning(max_steps=3, stop_acc=0, bn_eval=False).run(model, clean).model
    assert torch.equal(stats(frozen), stats(model))
    assert not torch.allclose(stats(updated), stats(model))


def test_anomaly_index_and_calibration():
    index = anomaly_index([10.0, 11.0, 9.0, 10.5, 2.0])
    assert max(range(5), key=index.__getitem__) == 4 and index[4] > 2
    clean = [Evidence(3, 0.8, 30, 0.05, 25.0, [24.0, 26.0, 50.0]), Evidence(9, 0.6, 40, 0.03, 20.0, [25.0, 25.0, 30.0])]
    thresholds = calibrate(clean, margin=0.75)
    assert thresholds.trigger_ratio == pytest.approx(0.75 * 0.8)
    assert not any(is_backdoored(e, thresholds) for e in clean)
    assert is_backdoored(Evidence(3, 0.9, 10, 0.08, 5.0, [24.0, 26.0, 30.0]), thresholds)
    assert not is_backdoored(Evidence(3, 0.1, 10, 0.0, 5.0, [24.0, 26.0, 30.0]), Thresholds())  # no collapse, no flag


def test_prune_zeroes_exactly_the_channels_under_the_threshold(digits_model):
    model, _ = digits_model
    names = [name for name, layer in model.net.named_modules() if isinstance(layer, nn.BatchNorm2d)]
    masks = {name: torch.linspace(0, 1, dict(model.net.named_modules())[name].num_features) for name in names}
    pruned, count = MaskPruning.prune(model, masks, 0.5)
    expected = sum(int((m <= 0.5).sum()) for m in masks.values())
    assert count == expected
    for name in names:
        layer, original = dict(pruned.net.named_modules())[name], dict(model.net.named_modules())[name]
        off = masks[name] <= 0.5
        assert (layer.weight[off] == 0).all() and torch.equal(layer.weight[~off], original.weight[~off])


def test_calibration_with_blend_ratios_and_the_cap():
    clean = [Evidence(7, 0.4, 150, 0.03, 60.0, [30.0, 30.0], 300.0, [150.0, 150.0]),
             Evidence(7, 0.4, 180, 0.03, 20.0, [25.0, 25.0], 120.0, [200.0, 200.0])]
    thresholds = calibrate(clean, margin=0.75)
    assert thresholds.trigger_ratio == pytest.approx(0.75 * 0.8)
    assert thresholds.blend_ratio == pytest.approx(0.75 * 0.6)
    assert calibrate(clean[:1], margin=0.75).trigger_ratio == 1.0  # 0.75 * 2.0 is capped: the label must be smaller than the median
    assert not any(is_backdoored(e, thresholds) for e in clean)
    # A blend-shaped backdoor: the mask trigger looks ordinary, the blend trigger is small.
    blended = Evidence(0, 0.5, 100, 0.04, 27.0, [30.0, 30.0], 60.0, [170.0, 170.0])
    assert blended.trigger_ratio > thresholds.trigger_ratio and is_backdoored(blended, thresholds)
    assert not is_backdoored(Evidence(0, 0.5, 100, 0.04, 27.0, [30.0, 30.0]), thresholds)  # without the blend scan: not flagged


def test_blend_shaped_trigger_is_one_alpha_over_the_image(digits_model):
    model, data = digits_model
    clean = data.train.subset(150)
    trigger = NeuralCleanse(steps=40, shape="blend").recover(model, clean.x[clean.y != 0], 0)
    assert trigger.mask.shape == (1, 8, 8) and torch.allclose(trigger.mask, trigger.mask.flatten()[0].expand(1, 8, 8))
    alpha = trigger.mask.flatten()[0].item()
    assert 0 < alpha < 1 and trigger.l1 == pytest.approx(alpha * 64, rel=1e-4)
    moved = (model.predict(trigger.apply(clean.x[clean.y != 0])) == 0).float().mean().item()
    assert moved == pytest.approx(trigger.success, abs=0.02)  # the reported success is the trigger's real effect
