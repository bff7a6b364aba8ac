"""Model sources: zoo:NAME, torchvision:NAME, python:module:factory, torchscript:PATH.

Weights are a state_dict loaded with `torch.load(weights_only=True)`: a checkpoint whose pickle
would build arbitrary objects (and so could run code) is refused, never executed.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import torch
from torch import nn

from secsuite import zoo
from secsuite.errors import ModelError
from secsuite.model import Classifier

SOURCES = {
    "zoo:NAME": "built-in architectures: " + ", ".join(sorted(zoo.ZOO)),
    "torchvision:NAME": "any torchvision.models name (weights from `weights`, never downloaded)",
    "python:module:factory": "factory() in an importable module returning an nn.Module",
    "torchscript:PATH": "a TorchScript archive (torch.jit.save); trusted code by construction",
}


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).splitlines()[0] if str(error) else "unsafe pickle"
        raise ModelError(f"{path}: refused: the checkpoint is not a plain state_dict ({reason[:160]})") from None
    except Exception as error:  # corrupt zip, truncated file, ...
        raise ModelError(f"{path}: cannot read checkpoint: {type(error).__name__}: {str(error)[:160]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: expected a state_dict of tensors")
    return state


def build_module(source: str, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    kind, _, rest = source.partition(":")
    if kind == "zoo":
        try:
            return zoo.build(rest, num_classes, input_shape)
        except ValueError as error:
            raise ModelError(str(error)) from None
    if kind == "torchvision":
        import torchvision

        try:
            return torchvision.models.get_model(rest, weights=None, num_classes=num_classes)
        except ValueError as error:
            raise ModelError(f"unknown torchvision model {rest!r}: {error}") from None
    if kind == "python":
        module_name, _, factory_name = rest.rpartition(":")
        if not module_name or not factory_name:
            raise ModelError(f"python source must look like python:package.module:factory, got {source!r}")
        try:
            factory = getattr(importlib.import_module(module_name), factory_name)
        except (ImportError, AttributeError) as error:
            raise ModelError(f"cannot import {module_name}:{factory_name}: {error}") from None
        module = factory()
        if isinstance(module, Classifier):
            module = module.net
        if not isinstance(module, nn.Module):
            raise ModelError(f"{module_name}:{factory_name}() returned {type(module).__name__}, not an nn.Module")
        return module
    if kind == "torchscript":
        path = Path(rest)
        if not path.is_file():
            raise ModelError(f"TorchScript file not found: {path}")
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as error:
            raise ModelError(f"{path}: not a TorchScript archive: {str(error).splitlines()[0][:160]}") from None
    raise ModelError(f"unknown model source {source!r}; use zoo:NAME, torchvision:NAME, python:module:factory or torchscript:PATH")


def load_classifier(
    source: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    weights: str | Path | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    device: str | torch.device | None = None,
) -> Classifier:
    module = build_module(source, num_classes, input_shape)
    if weights is not None:
        state = load_state_dict(weights)
        try:
            module.load_state_dict(state)
        except RuntimeError as error:
            raise ModelError(f"{weights}: weights do not fit {source}: {str(error).splitlines()[0][:200]}") from None
    classifier = Classifier(module, num_classes, input_shape, mean, std, name=source)
    if device is not None:
        classifier.to(device)
    return classifier.eval()
