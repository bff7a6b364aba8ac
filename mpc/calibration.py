"""Range calibration for CrypTen's Newton-Raphson inverse square root and reciprocal.

CrypTen starts both iterations from fixed initial guesses that are only good on a limited range:

- `inv_sqrt(v)` starts from 2.2·exp(-(v/2 + 0.2)) + 0.2 - v/1024, within ~40% of 1/sqrt(v) for v
  in about [0.1, 150]; below that it converges slowly (3 iterations are far off for the variances
  of 0.001-1 that trained ViTs feed LayerNorm), and above ~200 the guess turns negative and the
  iteration diverges.
- `reciprocal(x)` starts from 3·exp(1 - 2x) + 0.003, good for x in about [0.05, 2]; above ~5 it
  needs most of its 10 iterations, above ~600 it diverges.

The model owner, who has training data, computes each layer's input range in plaintext and picks
a public power-of-two prescale `a` that moves it into the good range. The private layers then
compute exactly the same function:

- LayerNorm: z = a·(x - mean), out = z / sqrt(mean(z²) + a²·eps)   (equals (x - mean)/sqrt(var + eps))
- ReLU-softmax: 1/s = a · 1/(a·s)

Scaling the centred values before squaring also keeps small variances above fixed-point resolution.
The prescales are public: each reveals one power of two per layer about the model's activation
scale (stated in docs/mpc.md). The calibration data is the model owner's, never the private batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from secsuite.model import Classifier
from secsuite.zoo import Attention

# Geometric centres of the ranges where CrypTen's initial guesses are within ~40% of the answer.
INV_SQRT_CENTRE = 4.0  # inv_sqrt: good for v in about [0.1, 150]
RECIPROCAL_TOP = 1.0  # reciprocal: map the largest calibrated input here (good for x in about [0.05, 2])

PRESCALE_ATTR = "mpc_prescale"  # plain attribute on nn.LayerNorm / Attention modules; survives deepcopy and pickling


def prescale(module: nn.Module) -> float:
    """The public prescale calibrated for `module` (1.0 when it was never calibrated)."""
    return float(module.__dict__.get(PRESCALE_ATTR, 1.0))


def _power_of_two(value: float) -> float:
    return 2.0 ** round(math.log2(value))


def calibrate(classifier: Classifier, x: torch.Tensor, batch_size: int = 256) -> dict[str, dict[str, float]]:
    """Set a prescale on every LayerNorm and ReLU-softmax attention of `classifier` from plaintext data `x`.

    Returns {layer name: {"min", "max", "prescale"}}: the calibrated input range (LayerNorm: per-token
    variance; attention: positive row sums of ReLU(scores)) and the chosen power of two.
    """
    if len(x) == 0:
        raise ValueError("calibration data must not be empty")
    ranges: dict[str, list[float]] = {}

    def record(name: str, values: torch.Tensor) -> None:
        values = values[values > 0]
        if values.numel():
            low, high = values.min().item(), values.max().item()
            old = ranges.setdefault(name, [low, high])
            old[0], old[1] = min(old[0], low), max(old[1], high)

    def layernorm_hook(name):
        def hook(module, inputs, output):
            record(name, inputs[0].var(-1, unbiased=False) + module.eps)
        return hook

    def attention_hook(name):
        def hook(module: Attention, inputs, output):
            x_in = inputs[0]
            batch, tokens, dim = x_in.shape
            head_dim = dim // module.heads
            q, k, _ = module.qkv(x_in).reshape(batch, tokens, 3, module.heads, head_dim).permute(2, 0, 3, 1, 4)
            record(name, F.relu(q @ k.transpose(-2, -1) / math.sqrt(head_dim)).sum(-1))
        return hook

    modules = dict(classifier.named_modules())
    handles = []
    for name, module in modules.items():
        if isinstance(module, nn.LayerNorm):
            handles.append(module.register_forward_hook(layernorm_hook(name)))
        elif isinstance(module, Attention):
            handles.append(module.register_forward_hook(attention_hook(name)))
    was_training = classifier.training
    classifier.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                classifier(x[start:start + batch_size].to(classifier.device))
    finally:
        for handle in handles:
            handle.remove()
        classifier.train(was_training)
    report = {}
    for name, (low, high) in ranges.items():
        module = modules[name]
        if isinstance(module, nn.LayerNorm):
            # a² · sqrt(low · high) = INV_SQRT_CENTRE: centre the variance range (log scale) in inv_sqrt's good range.
            scale = _power_of_two(math.sqrt(INV_SQRT_CENTRE / math.sqrt(low * high)))
        else:
            scale = _power_of_two(RECIPROCAL_TOP / high)
        setattr(module, PRESCALE_ATTR, scale)
        report[name] = {"min": low, "max": high, "prescale": scale}
    return report


def clear_calibration(classifier: nn.Module) -> None:
    for module in classifier.modules():
        module.__dict__.pop(PRESCALE_ATTR, None)
