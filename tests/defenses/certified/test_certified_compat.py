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


def test_optimize_graph_available():
    compat.apply()
    from torch.onnx.utils import _optimize_graph

    assert callable(_optimize_graph)


def test_node_getitem_reads_attributes():
    compat.apply()
    graph = torch.jit.trace(lambda x: x.transpose(0, 1), torch.zeros(2, 3)).graph
    consts = [node for node in graph.nodes() if node.kind() == "prim::Constant" and node.attributeNames()]
    assert consts, "the trace should contain constants with attributes"
    node = consts[0]
    key = node.attributeNames()[0]
    assert node[key] == getattr(node, node.kindOf(key))(key)


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


def test_patches_are_idempotent():
    L = compat.lirpa()
    from auto_LiRPA.bound_ops import BoundAveragePool

    before = (L.BoundedModule._named_members, BoundAveragePool.bound_backward, torch._C.Node.__getitem__)
    compat.apply()
    compat.lirpa()
    assert (L.BoundedModule._named_members, BoundAveragePool.bound_backward, torch._C.Node.__getitem__) == before
