"""Compatibility patches that let auto_LiRPA 0.3 (written for torch<1.13, numpy 1) run on torch 2.x and numpy 2.

`apply()` is idempotent and must run before `import auto_LiRPA`; `lirpa()` does both and returns the module.
Each patch only fills in what is missing, so it becomes a no-op on versions that do not need it.
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy
import torch


def _numpy_arraysetops() -> None:
    # numpy 2 removed numpy.lib.arraysetops; auto_LiRPA's operators/base.py imports `isin` from it.
    if "numpy.lib.arraysetops" not in sys.modules:
        try:
            importlib.import_module("numpy.lib.arraysetops")
        except ImportError:
            stub = types.ModuleType("numpy.lib.arraysetops")
            stub.isin = numpy.isin
            sys.modules["numpy.lib.arraysetops"] = stub


def _set_opset_version() -> None:
    # torch 2.x dropped torch.onnx.symbolic_helper._set_opset_version; auto_LiRPA calls it with 12 before
    # converting the trace, and the torchscript exporter reads the opset from its GLOBALS.
    import torch.onnx.symbolic_helper as symbolic_helper
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

    if not hasattr(symbolic_helper, "_set_opset_version"):
        def _set_opset_version(opset_version: int) -> None:
            GLOBALS.export_onnx_opset_version = opset_version

        symbolic_helper._set_opset_version = _set_opset_version


def _optimize_graph() -> None:
    # The trace-to-ONNX-graph pass moved into the torchscript exporter; alias it where torch.onnx.utils lacks it.
    import torch.onnx.utils as onnx_utils

    if not hasattr(onnx_utils, "_optimize_graph"):
        from torch.onnx._internal.torchscript_exporter.utils import _optimize_graph

        onnx_utils._optimize_graph = _optimize_graph


def _node_getitem() -> None:
    # auto_LiRPA reads node attributes as `node[name]`; torch 2.x removed torch._C.Node.__getitem__.
    if not hasattr(torch._C.Node, "__getitem__"):
        torch._C.Node.__getitem__ = lambda node, key: getattr(node, node.kindOf(key))(key)


def _named_members(bounded_module_cls: type) -> None:
    # torch 2.x calls Module._named_members(..., remove_duplicate=...); BoundedModule's override lacks the argument.
    original = bounded_module_cls._named_members
    if getattr(original, "_secsuite_patched", False):
        return

    def _named_members(self, get_members_fn, prefix="", recurse=True, remove_duplicate=True, **_):
        return original(self, get_members_fn, prefix=prefix, recurse=recurse)

    _named_members._secsuite_patched = True
    bounded_module_cls._named_members = _named_members


def _avgpool_contiguous(bound_avgpool_cls: type) -> None:
    # BoundAveragePool.bound_backward calls .view on the incoming A matrix, which torch 2.x hands over
    # non-contiguous after a Flatten; CROWN through average pooling then fails unless A is made contiguous.
    original = bound_avgpool_cls.bound_backward
    if getattr(original, "_secsuite_patched", False):
        return

    def bound_backward(self, last_lA, last_uA, x):
        contiguous = [a.contiguous() if isinstance(a, torch.Tensor) else a for a in (last_lA, last_uA)]
        return original(self, *contiguous, x)

    bound_backward._secsuite_patched = True
    bound_avgpool_cls.bound_backward = bound_backward


def _clamp_unit_interval(value: torch.Tensor) -> torch.Tensor:
    """value clamped to [0, 1], with the gradient passed through at exactly 0 and 1 (zero only outside)."""
    return torch.where((value >= 0) & (value <= 1), value, value.clamp(0, 1).detach())


def _relu_alpha_gradient(bound_relu_cls: type) -> None:
    # alpha-CROWN starts every ReLU slope alpha at CROWN's adaptive slope, exactly 0 or 1, and clamps it to [0, 1]
    # in _relu_mask_alpha; this torch's clamp passes no gradient at its bounds, so no alpha ever moved and
    # alpha-CROWN returned CROWN's bounds. Same relaxation, with the gradient kept at the bounds.
    if getattr(bound_relu_cls._relu_mask_alpha, "_secsuite_patched", False):
        return

    def _relu_mask_alpha(lower, upper, lb_lower_d, ub_lower_d):
        lower_mask = (lower >= 0).to(lower.dtype)
        upper_mask = upper <= 0
        unstable = (1.0 - lower_mask) * (1.0 - upper_mask.to(upper.dtype))
        slopes = [None if d is None else _clamp_unit_interval(d) * unstable + lower_mask for d in (lb_lower_d, ub_lower_d)]
        return slopes[0], slopes[1], upper_mask.all()

    _relu_mask_alpha._secsuite_patched = True
    bound_relu_cls._relu_mask_alpha = staticmethod(_relu_mask_alpha)


def _full_alpha_indices(bound_relu_cls: type) -> None:
    # init_opt_parameters keeps alphas for unstable neurons only unless more than `minimum_sparsity` of a layer is
    # unstable; then it allocates full alphas but resets the sparse indices only when verbosity > 0, and the
    # backward pass fails with "shape mismatch" scattering full alphas into the sparse positions.
    original = bound_relu_cls.init_opt_parameters
    if getattr(original, "_secsuite_patched", False):
        return

    def init_opt_parameters(self, start_nodes):
        original(self, start_nodes)
        if self.alpha_indices is not None:
            neurons = self.inputs[0].lower[0].numel()
            if self.alpha_indices[0].numel() > self.options.get("minimum_sparsity", 0.9) * neurons:
                self.alpha_indices = None

    init_opt_parameters._secsuite_patched = True
    bound_relu_cls.init_opt_parameters = init_opt_parameters


def apply() -> None:
    """Install the patches needed before auto_LiRPA is imported (idempotent)."""
    _numpy_arraysetops()
    _set_opset_version()
    _optimize_graph()
    _node_getitem()


def lirpa() -> types.ModuleType:
    """The patched auto_LiRPA module."""
    apply()
    import auto_LiRPA

    from auto_LiRPA.bound_ops import BoundAveragePool, BoundRelu

    _named_members(auto_LiRPA.BoundedModule)
    _avgpool_contiguous(BoundAveragePool)
    _relu_alpha_gradient(BoundRelu)
    _full_alpha_indices(BoundRelu)
    return auto_LiRPA
