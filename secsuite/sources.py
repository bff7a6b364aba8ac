"""Model sources: zoo:NAME, torchvision:NAME, python:module:factory, torchscript:PATH.

Trust model (docs/security.md): a weights file may come from anyone. It is a state_dict loaded
with `torch.load(weights_only=True)`, whose pickle may only build tensors and plain containers
(a checkpoint that would run code is refused, never executed), or a safetensors file, which is
raw tensor bytes behind a JSON header. A `python:` factory and a TorchScript archive are code:
importing the one and `torch.jit.load` of the other run whatever they contain (TorchScript's
`__setstate__` can create and overwrite files). They load only with `trust_code = true` in the
model config, the user's statement that they vouch for that code.
"""

from __future__ import annotations

import importlib
import importlib.util
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
    "python:module:factory": "factory() in an importable module returning an nn.Module (code: needs trust_code = true)",
    "torchscript:PATH": "a TorchScript archive (torch.jit.save) (code: needs trust_code = true)",
}
CODE_SOURCES = ("python", "torchscript")
SAFETENSORS_PREFIX = "safetensors:"


def require_trust(source: str, trust_code: bool) -> None:
    """Refuse a source that runs code when loaded unless the config vouches for it."""
    kind = source.partition(":")[0]
    if kind in CODE_SOURCES and not trust_code:
        raise ModelError(f"model.source {source!r} runs code when loaded; set model.trust_code = true only if you trust "
                         "that code (untrusted models: a zoo/torchvision architecture plus a state_dict or safetensors file)")


def weights_path(weights: str | Path) -> Path:
    """The file behind a `weights` value (`safetensors:PATH` or a path)."""
    return Path(str(weights).removeprefix(SAFETENSORS_PREFIX))


def check_source(source: str, weights: str | Path | None, trust_code: bool) -> None:
    """Refuse an unknown source name, a missing module or file, or missing weights, without importing the
    user's module or reading any file (what `secsuite validate` can know before an audit runs)."""
    require_trust(source, trust_code)
    kind, _, rest = source.partition(":")
    if kind == "zoo" and rest not in zoo.ZOO:
        raise ModelError(f"unknown zoo model {rest!r}; choose from {', '.join(sorted(zoo.ZOO))}")
    if kind == "torchvision":
        import torchvision

        if rest.lower() not in torchvision.models.list_models():
            raise ModelError(f"unknown torchvision model {rest!r} (see torchvision.models.list_models())")
    if kind == "python":
        module_name, _, factory_name = rest.rpartition(":")
        if not module_name or not factory_name:
            raise ModelError(f"python source must look like python:package.module:factory, got {source!r}")
        try:
            found = importlib.util.find_spec(module_name)  # imports the parent packages only
        except (Exception, SystemExit) as error:
            raise ModelError(f"cannot import {module_name}: {_describe(error)}") from None
        if found is None:
            raise ModelError(f"cannot import {module_name}:{factory_name}: no module named {module_name!r}")
    if kind == "torchscript" and not Path(rest).is_file():
        raise ModelError(f"TorchScript file not found: {rest}")
    if kind not in ("zoo", "torchvision", "python", "torchscript"):
        raise ModelError(f"unknown model source {source!r}; use zoo:NAME, torchvision:NAME, python:module:factory or torchscript:PATH")
    if weights is not None and not weights_path(weights).is_file():
        raise ModelError(f"weights file not found: {weights_path(weights)}")


def load_state_dict(weights: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file (`safetensors:PATH` or a `.safetensors` name) or a torch state_dict."""
    path = weights_path(weights)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    if str(weights).startswith(SAFETENSORS_PREFIX) or path.suffix == ".safetensors":
        state = _load_safetensors(path)
    else:
        state = _load_torch_state_dict(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: expected a state_dict of tensors")
    return state


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise ModelError(f"{path}: reading safetensors needs the `safetensors` package") from None
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"{path}: not a readable safetensors file: {str(error).splitlines()[0][:160]}") from None


def _load_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).splitlines()[0] if str(error) else "unsafe pickle"
        raise ModelError(f"{path}: refused: the checkpoint is not a plain state_dict ({reason[:160]})") from None
    except Exception as error:  # corrupt zip, truncated file, ...
        raise ModelError(f"{path}: cannot read checkpoint: {type(error).__name__}: {str(error)[:160]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0][:160] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def build_module(source: str, num_classes: int, input_shape: tuple[int, int, int], trust_code: bool = False) -> nn.Module:
    require_trust(source, trust_code)
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
        except (Exception, SystemExit) as error:  # the module's own code failed (or called sys.exit) on import
            raise ModelError(f"importing {module_name} failed: {_describe(error)}") from None
        try:
            module = factory()
        except (Exception, SystemExit) as error:
            raise ModelError(f"{module_name}:{factory_name}() failed: {_describe(error)}") from None
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
    trust_code: bool = False,
) -> Classifier:
    """`weights`: a state_dict file, or safetensors (`safetensors:PATH` or a `.safetensors` file).
    `trust_code`: allow the sources that run code when loaded (python:, torchscript:)."""
    module = build_module(source, num_classes, input_shape, trust_code)
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
