"""Certified bounds with auto_LiRPA: per-example verified flags and margin lower bounds (true class minus each other class).

An example is verified at eps when every lower bound of the margin f_y(x') - f_j(x'), j != y, over the whole
perturbation ball is > 0. Linf balls are intersected with the [0,1] pixel domain; L2 balls are not (still sound).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from defenses.certified.compat import lirpa
from secsuite.errors import ModelError
from secsuite.model import Classifier
from secsuite.progress import progress_bar

METHODS = ("IBP", "CROWN-IBP", "CROWN", "alpha-CROWN")
NORMS = ("linf", "l2")
# Operations auto_LiRPA 0.3 has no bound operator for, mapped to the layer that usually produces them.
_OP_LAYERS: dict[str, tuple[str, type[nn.Module]]] = {"onnx::Erf": ("GELU (exact, erf)", nn.GELU)}


def canonical_method(method: str) -> str:
    for name in METHODS:
        if method.lower() == name.lower():
            return name
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


class AffineNormalize(nn.Module):
    """The classifier's per-channel normalisation as a grouped 1x1 convolution.

    auto_LiRPA 0.3's backward pass through a division by a constant only supports trivial conv patches, so
    CROWN fails on `(x - mean) / std`; a convolution with fixed weights is bounded exactly in every mode.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        channels = mean.numel()
        self.register_buffer("weight", (1.0 / std).reshape(channels, 1, 1, 1).clone())
        self.register_buffer("bias", (-mean / std).reshape(channels).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, groups=self.weight.shape[0])


def bound_view(classifier: Classifier) -> nn.Module:
    """f(x in [0,1]) -> logits as one module auto_LiRPA can trace; shares parameters with `classifier.net`."""
    return nn.Sequential(AffineNormalize(classifier.normalize.mean, classifier.normalize.std), classifier.net)


def unsupported_error(classifier: Classifier, model: nn.Module, error: Exception) -> ModelError:
    """A one-line ModelError naming the operation (and layer, when it can be found) that auto_LiRPA cannot bound."""
    from auto_LiRPA.bound_op_map import bound_op_map
    from auto_LiRPA.parse_graph import parse_module

    ops: list[str] = []
    try:
        nodes, _, _, _ = parse_module(model, (torch.zeros(1, *classifier.input_shape, device=classifier.device),))
        ops = sorted({n.op for n in nodes if n.op not in bound_op_map and _bound_class(n.op) is None})
    except Exception:  # the trace itself failed; the original message is all we have
        pass
    if not ops:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return ModelError(f"model {classifier.name} cannot be bounded by auto_LiRPA: {first_line[:200]}")
    described = []
    for op in ops:
        label, layer_type = _OP_LAYERS.get(op, (op, None))
        names = [name for name, module in classifier.net.named_modules() if layer_type is not None and isinstance(module, layer_type)]
        described.append(f"{op} from {label}" + (f" at net.{names[0]}" if names else ""))
    return ModelError(f"model {classifier.name} cannot be bounded by auto_LiRPA: unsupported layer {'; '.join(described)}")


def failing_bound_node(error: BaseException) -> str | None:
    """'BoundMaxPool /12'-style name of the innermost auto_LiRPA operator in the error's traceback, if any.

    Operators fail either in their own methods (`self`) or in BoundedModule loops over them (`node`).
    """
    from auto_LiRPA.bound_ops import Bound

    found = None
    traceback = error.__traceback__
    while traceback is not None:
        for owner in (traceback.tb_frame.f_locals.get(key) for key in ("self", "node")):
            if isinstance(owner, Bound):
                found = f"{type(owner).__name__} {getattr(owner, 'name', '')}".strip()
                break
        traceback = traceback.tb_next
    return found


def _bound_class(op: str):
    from auto_LiRPA import bound_ops

    return getattr(bound_ops, "Bound" + op.split("::")[-1], None)


def margin_spec(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C of shape (N, K-1, K): row j is e_y - e_other(j), other classes in increasing order."""
    eye = torch.eye(num_classes, device=y.device)
    others = torch.arange(num_classes, device=y.device).expand(len(y), -1)
    others = others[others != y.unsqueeze(1)].view(len(y), num_classes - 1)
    return eye[y].unsqueeze(1) - eye[others]


def perturbation(x: torch.Tensor, eps: float, norm: str):
    L = lirpa()
    if norm == "linf":
        return L.PerturbationLpNorm(norm=float("inf"), eps=eps, x_L=(x - eps).clamp(0, 1), x_U=(x + eps).clamp(0, 1))
    return L.PerturbationLpNorm(norm=2.0, eps=eps)


@dataclass
class CertifyResult:
    verified: torch.Tensor  # (N,) bool
    margin_lower: torch.Tensor  # (N, K-1) lower bounds of f_y - f_j for the other classes j in increasing order
    eps: float
    method: str
    norm: str
    time_s: float

    @property
    def verified_acc(self) -> float:
        return self.verified.float().mean().item() if len(self.verified) else 0.0


class Certifier:
    """Builds the bounded model once; `certify` then bounds any batch, eps, method and norm."""

    def __init__(self, classifier: Classifier, batch_size: int = 128):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.classifier = classifier
        self.batch_size = batch_size
        L = lirpa()
        was_training = classifier.training
        # Trace in eval mode so BatchNorm is converted with its running statistics; restore the caller's mode after.
        self.model = bound_view(classifier).eval()
        from auto_LiRPA.utils import logger

        # auto_LiRPA logs each unsupported node as an ERROR before raising; our ModelError says it in one line.
        level = logger.level
        logger.setLevel(logging.CRITICAL)
        try:
            self.bounded = L.BoundedModule(self.model, torch.zeros(1, *classifier.input_shape, device=classifier.device),
                                           device=classifier.device, bound_opts={"conv_mode": "patches", "verbosity": 0})
        except NotImplementedError as error:
            raise unsupported_error(classifier, self.model, error) from None
        finally:
            logger.setLevel(level)
            classifier.train(was_training)

    def bounds(self, x: torch.Tensor, eps: float, method: str, norm: str, C: torch.Tensor | None = None) -> torch.Tensor:
        """Lower bounds of C @ logits over the eps ball around each x (one batch, no splitting)."""
        L = lirpa()
        bounded_x = L.BoundedTensor(x, perturbation(x, eps, norm))
        try:
            with torch.set_grad_enabled(method == "alpha-CROWN"):
                lower, _ = self.bounded.compute_bounds(x=(bounded_x,), C=C, method=method, bound_upper=False)
        except (NotImplementedError, AssertionError) as error:
            # auto_LiRPA signals an operation it cannot bound with this method by one of these, deep in an operator.
            node = failing_bound_node(error)
            if node is None:
                raise
            raise ModelError(f"model {self.classifier.name}: auto_LiRPA 0.3 cannot bound layer {node} with {method}; "
                             "try another method or replace that layer") from None
        return lower.detach()

    def certify(self, x: torch.Tensor, y: torch.Tensor, eps: float, method: str = "CROWN", norm: str = "linf") -> CertifyResult:
        method = canonical_method(method)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.classifier.check_inputs(x, y)
        device = self.classifier.device
        started = time.perf_counter()
        lowers = []
        with progress_bar(f"certify {method} eps={eps:g}", total=len(x)) as advance:
            for start in range(0, len(x), self.batch_size):
                xb = x[start : start + self.batch_size].to(device)
                yb = y[start : start + self.batch_size].to(device)
                lowers.append(self.bounds(xb, eps, method, norm, C=margin_spec(yb, self.classifier.num_classes)))
                advance(len(xb))
        margin_lower = torch.cat(lowers) if lowers else torch.zeros(0, self.classifier.num_classes - 1, device=device)
        return CertifyResult(verified=(margin_lower > 0).all(dim=1), margin_lower=margin_lower, eps=float(eps), method=method,
                             norm=norm, time_s=time.perf_counter() - started)


def certify(classifier: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, method: str = "CROWN", norm: str = "linf",
            batch_size: int = 128) -> CertifyResult:
    """Verify (x, y) against every perturbation of norm `norm` up to `eps` with bound propagation `method`."""
    return Certifier(classifier, batch_size).certify(x, y, eps, method, norm)
