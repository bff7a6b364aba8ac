"""`[[evaluate]] kind = "extraction"`: run several extraction methods against the audited model,
each with a fresh black-box victim holding the same query budget, and report the curves.

Options: methods (list), budget (default threat.query_budget, else 10000), output
(probabilities | top-k | label), top_k, student (zoo name), pool_size (Knockoff's surrogate pool,
drawn from the attacker's `data_access` share of the training split), checkpoints, and one table
per method with that method's options (e.g. `cabage = { generators = 3 }`).
"""

from __future__ import annotations

from typing import Any

import torch

from attacks.extraction import METHODS, BlackBoxVictim, Probe, UnsupportedOutput
from attacks.extraction.base import Extraction
from secsuite.data import Dataset
from secsuite.errors import ConfigError
from secsuite.model import Classifier
from secsuite.progress import log
from secsuite.sections.extraction import CurvePoint, MethodResult, Refusal, Section
from secsuite.zoo import build

OPTIONS = {"methods", "budget", "output", "top_k", "student", "pool_size", "checkpoints"} | set(METHODS)


def surrogate_pool(train: Dataset, data_access: float, pool_size: int, seed: int) -> Dataset:
    """The attacker's images: a seeded draw of `pool_size` from its `data_access` share of the training split."""
    held = train.subset(max(1, int(round(data_access * len(train)))))
    order = torch.randperm(len(held), generator=torch.Generator().manual_seed(seed))[:pool_size]
    return Dataset(held.x[order], held.y[order], held.num_classes, f"{train.name}/surrogate")


def make_method(name: str, options: dict[str, Any], pool: Dataset, seed: int, checkpoints: int) -> Extraction:
    if name not in METHODS:
        raise ConfigError(f"unknown extraction method {name!r}; choose from {', '.join(sorted(METHODS))}")
    extra = {"pool": pool} if name == "knockoff" else {}
    try:
        return METHODS[name](**extra, **options, seed=seed, checkpoints=checkpoints)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"extraction {name}: {error}") from None


def run(context, spec) -> Section:
    params = spec.params()
    unknown = set(params) - OPTIONS
    if unknown:
        raise ConfigError(f"extraction: unknown option(s) {sorted(unknown)}; known: {sorted(OPTIONS)}")
    threat, victim_model = context.threat, context.classifier
    budget = int(params.get("budget", threat.query_budget or 10000))
    output, top_k = params.get("output", "probabilities"), params.get("top_k", 1)
    student = params.get("student", "small_cnn")
    checkpoints = params.get("checkpoints", 5)
    pool = surrogate_pool(context.data.train, threat.data_access, params.get("pool_size", 2000), threat.seed)
    probe = Probe(victim_model, context.eval_data)
    section = Section(victim_acc=(probe.victim_labels == probe.y).float().mean().item(), output=output, budget=budget,
                      student=student, n_eval=len(context.eval_data))
    for name in params.get("methods", ["knockoff", "dfme", "cabage"]):
        method = make_method(name, params.get(name, {}), pool, threat.seed, checkpoints)
        try:
            victim = BlackBoxVictim(victim_model, budget, output, top_k)
        except ValueError as error:
            raise ConfigError(f"extraction: {error}") from None
        torch.manual_seed(threat.seed)
        clone = Classifier(build(student, victim.num_classes, victim.input_shape), victim.num_classes, victim.input_shape,
                           name=f"{name}-clone").to(victim.device)
        try:
            result = method.extract(victim, clone, probe)
        except UnsupportedOutput as error:
            section.refused.append(Refusal(method=name, reason=str(error)))
            continue
        log(f"{name}: clone acc {100 * result.clone_acc:.1f}%, agreement {100 * result.agreement:.1f}% after {result.queries_spent} queries")
        section.methods.append(MethodResult(
            method=name, budget=budget, queries_spent=result.queries_spent, clone_acc=result.clone_acc, agreement=result.agreement,
            curve=[CurvePoint(queries=p.queries, clone_acc=p.clone_acc, agreement=p.agreement) for p in result.curve],
            time_s=result.time_s, params={k: v for k, v in method.params().items() if isinstance(v, (int, float, str, bool))},
        ))
    return section
