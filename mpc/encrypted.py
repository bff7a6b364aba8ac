"""Evaluate a Classifier on secret-shared inputs, op by op, with CrypTen tensors.

The zoo's ViT cannot take CrypTen's ONNX route (LayerNorm exports as LayerNormalization, which
CrypTen lacks), so every supported layer type has a handler here that mirrors its PyTorch forward
on CrypTen tensors. Running the same interpreter for CNNs and ViTs also gives one place to
attribute communication to operation types (`CostMeter`). Layers are matched by exact type:
a subclass may change `forward`, so it must get its own handler.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

from mpc.calibration import prescale
from mpc.layers import HeadMixAttention
from secsuite.errors import ModelError
from secsuite.model import Classifier, Normalize
from secsuite.zoo import Attention, Block, QuadGELU, ViT

MODEL_OWNER, DATA_OWNER = 0, 1


class CostMeter:
    """Rounds, bytes and wall time of each operation type, from CrypTen's communication counters."""

    def __init__(self, crypten):
        self.crypten = crypten
        self.comm = crypten.comm.get()
        self.by_op: dict[str, dict[str, float]] = {}

    @contextmanager
    def op(self, kind: str):
        before = self.comm.get_communication_stats()
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        after = self.comm.get_communication_stats()
        entry = self.by_op.setdefault(kind, {"rounds": 0, "bytes": 0, "calls": 0, "seconds": 0.0})
        entry["rounds"] += after["rounds"] - before["rounds"]
        entry["bytes"] += after["bytes"] - before["bytes"]
        entry["calls"] += 1
        entry["seconds"] += seconds


class EncryptedModel:
    """Weights secret-shared by the model owner (or kept public with private_weights=False)."""

    def __init__(self, crypten, classifier: Classifier, private_weights: bool = True):
        self.crypten = crypten
        self.private_weights = private_weights
        self.net = classifier
        self._params: dict[object, tuple] = {}
        check_supported(classifier)

    def param(self, tensor: torch.Tensor, key: object = None):
        """The shared (or public) copy of `tensor`, shared once per `key` (default: the tensor's identity).

        Both parties must share the same tensors in the same order, so a key must mean the same thing in each
        process for the whole session: the cache holds the tensor itself, so its id is never reused by another
        object, and tensors computed on each call (folded BatchNorm) pass a key naming their layer.
        """
        key = id(tensor) if key is None else key
        if key not in self._params:
            value = tensor.detach().float()
            self._params[key] = (tensor, self.crypten.cryptensor(value, src=MODEL_OWNER) if self.private_weights else value)
        return self._params[key][1]

    def __call__(self, x, meter: CostMeter):
        return run_module(self, self.net, x, meter)


def _linear(model: EncryptedModel, layer: nn.Linear, x, meter):
    with meter.op("linear"):
        out = x.matmul(model.param(layer.weight).t())
        return out + model.param(layer.bias) if layer.bias is not None else out


def _conv(model: EncryptedModel, layer: nn.Conv2d, x, meter):
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        raise ModelError(f"Conv2d with padding={layer.padding!r}, padding_mode={layer.padding_mode!r} is not supported under MPC")
    with meter.op("linear"):
        out = x.conv2d(model.param(layer.weight), stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
        return out + model.param(layer.bias).view(1, -1, 1, 1) if layer.bias is not None else out


def _batchnorm(model: EncryptedModel, layer: nn.BatchNorm2d, x, meter):
    # Eval-mode BatchNorm is an affine map; fold it so the model owner shares two vectors.
    scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
    shift = layer.bias - layer.running_mean * scale
    with meter.op("linear"):
        return (x * model.param(scale.view(1, -1, 1, 1), key=("batchnorm-scale", id(layer)))
                + model.param(shift.view(1, -1, 1, 1), key=("batchnorm-shift", id(layer))))


def _layernorm(model: EncryptedModel, layer: nn.LayerNorm, x, meter):
    # With a calibrated public prescale a (mpc.calibration): z = a(x - mean), z / sqrt(mean(z^2) + a^2 eps),
    # which is exactly (x - mean) / sqrt(var + eps) but keeps inv_sqrt's input in its convergence range.
    scale = prescale(layer)
    with meter.op("layernorm"):
        centred = x - x.mean(-1, keepdim=True)
        if scale != 1.0:
            centred = centred.mul(scale)
        inv_std = (centred.square().mean(-1, keepdim=True) + layer.eps * scale**2).inv_sqrt()
        out = centred * inv_std
        return out * model.param(layer.weight) + model.param(layer.bias) if layer.elementwise_affine else out


def _normalize(model: EncryptedModel, layer: Normalize, x, meter):
    # Mean/std are public preprocessing constants, so this is a local affine map.
    return x * (1.0 / layer.std) + (-layer.mean / layer.std)


def _relu(model, layer, x, meter):
    with meter.op("relu"):
        return x.relu()


def _gelu(model, layer: nn.GELU, x, meter):
    # CrypTen's erf is a truncated Taylor series: accurate near 0, divergent for |x| >~ 2.5.
    with meter.op("gelu"):
        return x * (x * (1 / math.sqrt(2))).erf().add(1.0).mul(0.5)


def _quad_gelu(model, layer, x, meter):
    with meter.op("quad_gelu"):
        return x.square().mul(0.125) + x.mul(0.25) + 0.5


def _maxpool(model, layer: nn.MaxPool2d, x, meter):
    with meter.op("maxpool"):
        return x.max_pool2d(layer.kernel_size, padding=layer.padding, stride=layer.stride)


def _avgpool(model, layer: nn.AvgPool2d, x, meter):
    with meter.op("avgpool"):
        return x.avg_pool2d(layer.kernel_size, stride=layer.stride, padding=layer.padding)


def _flatten(model, layer: nn.Flatten, x, meter):
    return x.flatten(start_dim=layer.start_dim, end_dim=layer.end_dim)


def _identity(model, layer, x, meter):
    return x


def _sequential(model, layer: nn.Sequential, x, meter):
    for child in layer:
        x = run_module(model, child, x, meter)
    return x


def _classifier(model, layer: Classifier, x, meter):
    return run_module(model, layer.net, run_module(model, layer.normalize, x, meter), meter)


def _positive_reciprocal(crypten, x, scale: float = 1.0):
    # x is positive by construction (a sum of ReLUs or squares plus a positive constant): skip the sign
    # computation, as CrypTen's own softmax does. 1/x = a * 1/(a*x) with the calibrated prescale a.
    with crypten.cfg.temp_override({"functions.reciprocal_all_pos": True}):
        if scale == 1.0:
            return x.reciprocal()
        return x.mul(scale).reciprocal().mul(scale)


def attention_weights(scores, kind: str, meter: CostMeter, scale: float = 1.0):
    """CrypTen mirror of secsuite.zoo.attention_weights; `scale` is the calibrated reciprocal prescale."""
    with meter.op(kind if kind != "scale" else "scale_attn"):
        if kind == "softmax":
            return scores.softmax(-1)
        if kind == "relu_softmax":
            positive = scores.relu()
            return positive * _positive_reciprocal(meter.crypten, positive.sum(-1, keepdim=True) + 1e-5, scale)
        if kind == "scale":
            return scores.div(scores.size(-1))
        if kind == "2quad":
            # Normalise by the mean, not the sum: CrypTen's Newton-Raphson reciprocal only converges
            # for inputs below ~600, which a sum of (x+5)^2 over the tokens easily exceeds.
            shifted = (scores + 5).square()
            return shifted * _positive_reciprocal(meter.crypten, shifted.mean(-1, keepdim=True)).div(scores.size(-1))
    raise ModelError(f"attention {kind!r} is not supported under MPC")


def _head_groups(layer: Attention) -> list[tuple[str, list[int]]]:
    """(kind, heads) groups: one group unless a searched layer mixes ReLU-softmax and ScaleAttn heads."""
    if isinstance(layer, HeadMixAttention):
        kinds = layer.head_kinds()
        return [(kind, [h for h, k in enumerate(kinds) if k == kind]) for kind in dict.fromkeys(kinds)]
    return [(layer.kind, list(range(layer.heads)))]


def _grouped_weights(layer: Attention, head_dim: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """qkv weight/bias and proj weight with the heads reordered group by group (an exact reparameterisation).

    The model owner permutes its plaintext weights once, so each head group is a contiguous slice under
    MPC and the groups need no secret-shared gather to restore head order.
    """
    order = torch.tensor([h for _, heads in _head_groups(layer) for h in heads])
    dim = layer.heads * head_dim
    features = torch.arange(dim).view(layer.heads, head_dim)[order].flatten()
    qkv_rows = torch.cat([features + part * dim for part in range(3)])
    bias = layer.qkv.bias.detach()[qkv_rows] if layer.qkv.bias is not None else None
    return layer.qkv.weight.detach()[qkv_rows], bias, layer.proj.weight.detach()[:, features]


def _attention(model: EncryptedModel, layer: Attention, x, meter):
    batch, tokens, dim = x.size()
    head_dim = dim // layer.heads
    groups = _head_groups(layer)
    if len(groups) > 1:
        key = ("grouped", id(layer))
        if key not in model._params:  # computed once per layer, so model.param sees the same tensors every call
            model._params[key] = (layer, _grouped_weights(layer, head_dim))
        qkv_weight, qkv_bias, proj_weight = model._params[key][1]
    else:
        qkv_weight, qkv_bias, proj_weight = layer.qkv.weight, layer.qkv.bias, layer.proj.weight
    with meter.op("linear"):
        qkv = x.matmul(model.param(qkv_weight).t())
        qkv = qkv + model.param(qkv_bias) if qkv_bias is not None else qkv
    qkv = qkv.reshape(batch, tokens, 3, layer.heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    with meter.op("matmul"):
        scores = q.matmul(k.transpose(-2, -1)).div(math.sqrt(head_dim))
    # Each head pays only for its own kind; groups are contiguous after the reordering above.
    parts, start = [], 0
    for kind, heads in groups:
        parts.append(attention_weights(scores[:, start:start + len(heads)] if len(groups) > 1 else scores, kind, meter,
                                       prescale(layer)))
        start += len(heads)
    weights = parts[0] if len(parts) == 1 else meter.crypten.cat(parts, dim=1)
    with meter.op("matmul"):
        out = weights.matmul(v)
    with meter.op("linear"):
        out = out.transpose(1, 2).reshape(batch, tokens, dim).matmul(model.param(proj_weight).t())
        return out + model.param(layer.proj.bias) if layer.proj.bias is not None else out


def _block(model: EncryptedModel, layer: Block, x, meter):
    x = x + run_module(model, layer.attn, run_module(model, layer.norm1, x, meter), meter)
    return x + run_module(model, layer.mlp, run_module(model, layer.norm2, x, meter), meter)


def _vit(model: EncryptedModel, layer: ViT, x, meter):
    batch = x.size(0)
    x = _conv(model, layer.patch_embed, x, meter).flatten(2).transpose(1, 2)
    cls = model.param(layer.cls_token).expand(batch, -1, -1)
    x = meter.crypten.cat([cls, x], dim=1) + model.param(layer.pos_embed)
    x = _layernorm(model, layer.norm, run_module(model, layer.blocks, x, meter), meter)
    return _linear(model, layer.head, x[:, 0], meter)


HANDLERS: dict[type, Callable] = {
    Classifier: _classifier, Normalize: _normalize, nn.Sequential: _sequential,
    nn.Linear: _linear, nn.Conv2d: _conv, nn.BatchNorm2d: _batchnorm, nn.LayerNorm: _layernorm,
    nn.ReLU: _relu, nn.GELU: _gelu, QuadGELU: _quad_gelu, nn.MaxPool2d: _maxpool, nn.AvgPool2d: _avgpool,
    nn.Flatten: _flatten, nn.Identity: _identity, nn.Dropout: _identity,
    Attention: _attention, HeadMixAttention: _attention, Block: _block, ViT: _vit,
}


def check_supported(module: nn.Module, prefix: str = "model") -> None:
    """Raise a one-line ModelError naming the first layer CrypTen cannot run (before any party starts)."""
    if type(module) not in HANDLERS:
        supported = ", ".join(sorted(cls.__name__ for cls in HANDLERS))
        raise ModelError(f"layer {prefix} ({type(module).__name__}) is not supported under MPC; supported layers: {supported}")
    if isinstance(module, nn.GELU) and module.approximate != "none":
        raise ModelError(f"layer {prefix} (GELU approximate={module.approximate!r}) is not supported under MPC")
    if isinstance(module, HeadMixAttention) and not module.binarised:
        raise ModelError(f"layer {prefix} (HeadMixAttention) still mixes two attention kinds; binarise it (mpc.search) first")
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.BatchNorm2d, Normalize)):
        return
    for name, child in module.named_children():
        check_supported(child, f"{prefix}.{name}")


def run_module(model: EncryptedModel, module: nn.Module, x, meter: CostMeter):
    return HANDLERS[type(module)](model, module, x, meter)
