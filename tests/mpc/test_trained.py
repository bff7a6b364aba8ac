"""Private inference of TRAINED ViT variants agrees with plaintext once the ranges are calibrated.

A ViT trained on digits feeds LayerNorm per-token variances of ~0.001-1, where CrypTen's inv_sqrt
(initial guess good for ~[0.1, 150], 3 Newton iterations) is far off; a freshly initialised ViT does
not show this, so these tests train one (a few epochs, seconds) and fine-tune the Quad variants.
"""

import copy
import math

import pytest
import torch

from mpc import calibrate, private_inference_many, to_variant
from mpc.calibration import INV_SQRT_CENTRE, PRESCALE_ATTR, prescale
from mpc.layers import fine_tune
from tests.mpc.agreement import assert_agrees_with_plaintext
from secsuite.model import Classifier
from secsuite.training import train_classifier
from secsuite.zoo import build

TRAINED_TOLERANCE = 0.1  # max |private - plaintext| logit; observed ~0.02 with 16-bit fixed point
BATCH = 64


@pytest.fixture(scope="module")
def trained(digits):
    shape = digits.train.input_shape
    torch.manual_seed(0)
    original = Classifier(build("vit_small", 10, shape, patch=2), 10, shape, name="vit-trained")
    train_classifier(original, digits.train, epochs=8, seed=0)
    variants = {}
    for attention in ("scale", "relu_softmax"):
        variant = to_variant(original.eval(), attention, "quad", name=f"trained-{attention}-quad")
        fine_tune(variant, original, digits.train, epochs=2, seed=0)
        variants[attention] = variant.eval()
    return original.eval(), variants


@pytest.fixture(scope="module")
def session(trained, digits):
    _, variants = trained
    calibrated = {name: copy.deepcopy(model) for name, model in variants.items()}
    for model in calibrated.values():
        calibrate(model, digits.train.x)
    uncalibrated = copy.deepcopy(variants["scale"])
    uncalibrated.name = "trained-scale-quad-uncalibrated"
    models = [calibrated["scale"], calibrated["relu_softmax"], uncalibrated]
    return {r.name: r for r in private_inference_many(models, digits.test.x[:BATCH])}


def test_calibration_is_exact_in_plaintext_and_moves_ranges_into_convergence(trained, digits):
    _, variants = trained
    model = copy.deepcopy(variants["relu_softmax"])
    report = calibrate(model, digits.train.x)
    layernorms = {name: entry for name, entry in report.items() if "norm" in name}
    attentions = {name: entry for name, entry in report.items() if name.endswith("attn")}
    assert len(layernorms) == 5 and len(attentions) == 2
    for name, entry in report.items():
        assert math.log2(entry["prescale"]).is_integer(), name  # a power of two: reveals only a magnitude
        assert prescale(dict(model.named_modules())[name]) == entry["prescale"]
    # Trained variances sit below inv_sqrt's good range; the prescale centres them on it (log scale).
    assert any(entry["min"] < 0.1 for entry in layernorms.values())
    for name, entry in layernorms.items():
        centre = math.sqrt(entry["min"] * entry["max"]) * entry["prescale"] ** 2
        assert INV_SQRT_CENTRE / 2 <= centre <= INV_SQRT_CENTRE * 2, name
    for name, entry in attentions.items():
        assert 0.5 <= entry["max"] * entry["prescale"] <= 2, name  # reciprocal's initial guess is good up to ~2
    # The prescale attributes never change the plaintext model.
    with torch.no_grad():
        assert torch.equal(model(digits.test.x[:8]), variants["relu_softmax"](digits.test.x[:8]))
    model_copy = copy.deepcopy(model)
    assert all(PRESCALE_ATTR in m.__dict__ for name, m in model_copy.named_modules() if name in report)


def test_trained_quad_variants_agree_with_plaintext(session):
    for name in ("trained-scale-quad", "trained-relu_softmax-quad"):
        assert_agrees_with_plaintext(session[name], TRAINED_TOLERANCE)


def test_without_calibration_the_trained_model_drifts(session):
    # The mechanism, pinned: same model, same batch, CrypTen's ranges as they are.
    drift = session["trained-scale-quad-uncalibrated"].max_abs_error
    assert drift > 10 * session["trained-scale-quad"].max_abs_error
    assert drift > TRAINED_TOLERANCE
