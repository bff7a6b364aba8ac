"""CrypTen 0.4.1 on torch 2.x: the small set of patches that make it import and convert models.

`load_crypten()` applies every patch (idempotent) and returns the `crypten` module; nothing else in
`mpc` imports crypten directly. Each patch is pinned by tests/mpc/test_compat.py.
"""

from __future__ import annotations

import copy
import importlib
import sys

import torch
from torch import nn

_REGISTRATION = "torch.onnx._internal.registration"


def _alias_onnx_registration() -> None:
    # CrypTen's onnx_converter imports torch.onnx._internal.registration at import time; torch 2.x
    # moved it under the TorchScript exporter. Alias the old name before crypten is imported.
    if _REGISTRATION not in sys.modules:
        sys.modules[_REGISTRATION] = importlib.import_module("torch.onnx._internal.torchscript_exporter.registration")


def _export_with_torchscript(onnx_converter) -> None:
    # torch 2.x defaults torch.onnx.export to the dynamo exporter, which CrypTen's converter cannot
    # read (and which ignores operator_export_type); force the TorchScript exporter.
    if getattr(onnx_converter._export_pytorch_model, "_secsuite_patched", False):
        return

    def export(f, pytorch_model, dummy_input):
        torch.onnx.export(
            pytorch_model, dummy_input, f, do_constant_folding=False, export_params=True, input_names=["input"],
            output_names=["output"], opset_version=onnx_converter._OPSET_VERSION, dynamo=False,
        )
        return f

    export._secsuite_patched = True
    onnx_converter._export_pytorch_model = export


def _register_identity(crypten_nn, onnx_converter) -> None:
    # torch 2.x exports no-op layers (nn.Identity, flatten of a flat tensor, ...) as ONNX Identity,
    # which has no CrypTen module; register a pass-through.
    if "Identity" in onnx_converter.ONNX_TO_CRYPTEN:
        return

    class PassThrough(crypten_nn.Module):
        def forward(self, x):
            return x

        @staticmethod
        def from_onnx(attributes=None):
            return PassThrough()

    onnx_converter.ONNX_TO_CRYPTEN["Identity"] = PassThrough


def load_crypten():
    """Import crypten with every patch applied (safe to call any number of times)."""
    _alias_onnx_registration()
    import crypten
    import crypten.nn
    from crypten.nn import onnx_converter

    _export_with_torchscript(onnx_converter)
    _register_identity(crypten.nn, onnx_converter)
    return crypten


def without_dropout(model: nn.Module) -> nn.Module:
    """A copy of `model` with every Dropout replaced by Identity: CrypTen's Dropout module breaks on
    the exported graph, and inference does not need it."""
    model = copy.deepcopy(model)
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.dropout._DropoutNd):
            setattr(model, name, nn.Identity())
        else:
            setattr(model, name, without_dropout(child))
    return model


def from_pytorch(model: nn.Module, dummy_input: torch.Tensor):
    """CrypTen's ONNX route for a plain model (conv/linear/pool/BatchNorm/ReLU), with the patches applied.

    Transformers do not take this route (LayerNorm exports as LayerNormalization, which CrypTen
    lacks); `mpc.encrypted` evaluates them op by op instead.
    """
    crypten = load_crypten()
    return crypten.nn.from_pytorch(without_dropout(model).eval(), dummy_input)
