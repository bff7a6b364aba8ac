"""`[[evaluate]] kind = "certify"`: verified accuracy per eps and method on the audit's model and threat model.

Spec fields: methods (default IBP, CROWN-IBP, CROWN), limit (examples, default 100), batch_size (default 128).
"""

from __future__ import annotations

import torch

from defenses.certified.certify import Certifier, canonical_method
from secsuite.errors import ConfigError
from secsuite.progress import log
from secsuite.sections.certified import EmpiricalCurve, MethodCurve, Section, VerifiedPoint

DEFAULT_METHODS = ("IBP", "CROWN-IBP", "CROWN")
PARAMS = {"methods", "limit", "batch_size"}


def parse_params(params: dict) -> tuple[list[str], int, int]:
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise ConfigError(f"evaluate certify: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(PARAMS))}")
    methods = params.get("methods", list(DEFAULT_METHODS))
    if isinstance(methods, str) or not methods:
        raise ConfigError("evaluate certify: methods must be a non-empty list, e.g. [\"IBP\", \"CROWN\"]")
    try:
        methods = [canonical_method(m) for m in methods]
    except ValueError as error:
        raise ConfigError(f"evaluate certify: {error}") from None
    limit, batch_size = params.get("limit", 100), params.get("batch_size", 128)
    for field, value in (("limit", limit), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"evaluate certify: {field} must be a positive integer, got {value!r}")
    return methods, limit, batch_size


def check(spec, config) -> None:
    """What `run` would refuse in this entry, found without a model or data (`secsuite validate`)."""
    parse_params(spec.params())


def empirical_flags(context, indices: torch.Tensor) -> dict[float, torch.Tensor]:
    """Per-example robustness against every attack of the audit (worst case), on the evaluated examples at `indices`, per eps."""
    evaluation = context.attack_evaluation
    if evaluation is None or not evaluation.robust:
        return {}
    flags: dict[float, torch.Tensor] = {}
    for per_eps in evaluation.robust.values():
        for eps, robust in per_eps.items():
            robust = robust.cpu().bool()[indices]
            flags[eps] = flags[eps] & robust if eps in flags else robust
    return flags


def empirical_curves(context) -> list[EmpiricalCurve]:
    evaluation = context.attack_evaluation
    if evaluation is None:
        return []
    curves = [EmpiricalCurve(name=entry.name, eps=[r.eps for r in entry.results], robust_acc=[r.robust_acc for r in entry.results])
              for entry in evaluation.entries if not entry.minimum_norm]
    if evaluation.worst_case:
        curves.append(EmpiricalCurve(name="worst case", eps=[w.eps for w in evaluation.worst_case],
                                     robust_acc=[w.robust_acc for w in evaluation.worst_case]))
    return curves


def run(context, spec) -> Section:
    methods, limit, batch_size = parse_params(spec.params())
    # The certified examples are a stratified subset of the audit's, and are compared with the attacks on exactly those.
    indices = context.eval_data.subset_indices(limit, seed=context.threat.seed)
    data = context.eval_data.subset(limit, seed=context.threat.seed)
    classifier = context.classifier
    certifier = Certifier(classifier, batch_size)
    flags = empirical_flags(context, indices)
    curves = []
    for method in methods:
        points = []
        for eps in context.threat.eps:
            result = certifier.certify(data.x, data.y, eps, method, context.threat.norm)
            robust = flags.get(eps)
            broken = int((result.verified.cpu() & ~robust).sum()) if robust is not None else None
            points.append(VerifiedPoint(eps=eps, verified_acc=result.verified_acc, time_per_example_s=result.time_s / max(len(data), 1),
                                        verified_but_broken=broken))
            log(f"certify {method} eps {eps:g}: verified {100 * result.verified_acc:.1f}%")
        curves.append(MethodCurve(method=method, results=points))
    return Section(norm=context.threat.norm, n_examples=len(data), clean_acc=classifier.accuracy(data.x, data.y), methods=curves,
                   empirical=empirical_curves(context),
                   empirical_on_subset={f"{eps:g}": robust.float().mean().item() for eps, robust in flags.items()})
