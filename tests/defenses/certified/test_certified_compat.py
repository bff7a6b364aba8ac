"""Each auto_LiRPA 0.3 compatibility patch is in place, does what it claims, and is applied only once."""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

from defenses.certified import compat


def test_numpy_arraysetops_isin():
    compat.apply()
    from numpy.lib.arraysetops import isin

    assert isin(np.array([1, 2, 3]), [2]).tolist() == [False, True, False]
    assert "numpy.lib.arraysetops" in sys.modules


def test_set_opset_version_sets_exporter_globals():
    compat.apply()
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    from torch.onnx.symbolic_helper import _set_opset_version

    _set_opset_version(12)
    assert GLOBALS.export_onnx_opset_version == 12


def test_optimize_graph_turns_a_trace_into_onnx_operators():
    compat.apply()
    from torch.onnx.utils import _optimize_graph

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    trace, _ = torch.jit._get_trace_graph(net, (torch.zeros(1, 1, 4, 4),))
    graph = _optimize_graph(trace, torch.onnx.OperatorExportTypes.ONNX_ATEN_FALLBACK, params_dict={})  # as auto_LiRPA calls it
    assert {"onnx::Conv", "onnx::Relu", "onnx::Flatten", "onnx::Gemm"} <= {node.kind() for node in graph.nodes()}


def test_node_getitem_reads_attributes():
    compat.apply()
    graph = torch.jit.trace(lambda x: x.transpose(0, 1) * 2.5, torch.zeros(2, 3)).graph
    values = [node["value"] for node in graph.nodes() if node.kind() == "prim::Constant" and "value" in node.attributeNames()]
    assert {0, 1} <= {v for v in values if isinstance(v, int)}
    assert any(isinstance(v, torch.Tensor) and v.item() == 2.5 for v in values)


def test_bounded_module_named_members_accepts_remove_duplicate():
    L = compat.lirpa()
    bounded = L.BoundedModule(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.zeros(1, 4))
    # torch 2.x's named_parameters passes remove_duplicate; the unpatched override raised TypeError.
    assert len(list(bounded.named_parameters())) == 2
    assert len(list(bounded._named_members(lambda m: m._parameters.items(), remove_duplicate=False))) == 2


def test_crown_through_average_pooling():
    L = compat.lirpa()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 3)).eval()
    bounded = L.BoundedModule(net, torch.zeros(1, 1, 4, 4))
    x = torch.rand(2, 1, 4, 4)
    lower, upper = bounded.compute_bounds(x=(L.BoundedTensor(x, L.PerturbationLpNorm(norm=float("inf"), eps=0.01)),), method="CROWN")
    out = net(x)
    assert (lower <= out + 1e-5).all() and (out <= upper + 1e-5).all()


def _crown_and_alpha(net: nn.Module, x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    L = compat.lirpa()
    bounded = L.BoundedModule(net, torch.zeros(1, *x.shape[1:]), bound_opts={"conv_mode": "patches", "verbosity": 0})
    bounded_x = L.BoundedTensor(x, L.PerturbationLpNorm(norm=float("inf"), eps=eps))
    crown, _ = bounded.compute_bounds(x=(bounded_x,), method="CROWN", bound_upper=False)
    with torch.enable_grad():
        alpha, _ = bounded.compute_bounds(x=(bounded_x,), method="alpha-CROWN", bound_upper=False)
    return crown.detach(), alpha.detach()


def test_alpha_crown_moves_the_relu_slopes():
    # Unpatched, the slopes start at exactly 0 or 1, clamp passes them no gradient, and alpha-CROWN returns CROWN's bound.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    crown, alpha = _crown_and_alpha(net, torch.rand(4, 1, 8, 8), 0.05)
    assert (alpha >= crown - 1e-6).all() and (alpha - crown).mean() > 1e-3 * crown.abs().mean()


def test_alpha_crown_on_a_layer_that_is_mostly_unstable():
    # Over 90% of the hidden Linear's 32 neurons are unstable: unpatched, a full alpha meets sparse indices ("shape mismatch").
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    x = torch.rand(4, 1, 8, 8)
    crown, alpha = _crown_and_alpha(net, x, 0.05)
    assert (alpha >= crown - 1e-6).all() and (alpha > crown).any()
    with torch.no_grad():
        sampled = net((x.unsqueeze(1) + (torch.rand(4, 200, 1, 8, 8) * 2 - 1) * 0.05).flatten(0, 1)).view(4, 200, 10)
    assert (sampled >= alpha.unsqueeze(1) - 1e-5).all()


def test_patches_are_idempotent():
    L = compat.lirpa()
    from auto_LiRPA.bound_ops import BoundAveragePool

    from auto_LiRPA.bound_ops import BoundRelu

    patched = lambda: (L.BoundedModule._named_members, BoundAveragePool.bound_backward, torch._C.Node.__getitem__,  # noqa: E731
                       BoundRelu._relu_mask_alpha, BoundRelu.init_opt_parameters)
    before = patched()
    compat.apply()
    compat.lirpa()
    assert patched() == before
