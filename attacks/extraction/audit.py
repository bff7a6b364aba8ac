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

from attacks.evasion.base import check_positive_int
from attacks.extraction import METHODS, OUTPUTS, BlackBoxVictim, Probe, UnsupportedOutput
from attacks.extraction.base import Extraction
from secsuite.data import Dataset
from secsuite.errors import ConfigError
from secsuite.model import Classifier
from secsuite.progress import log
from secsuite.sections.extraction import CurvePoint, MethodResult, Refusal, Section
from secsuite.zoo import ZOO, build

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


def parse_options(params: dict[str, Any], threat, num_classes: int) -> dict[str, Any]:
    """The entry's options with their defaults, each checked; a method's own table is checked when it is built."""
    unknown = set(params) - OPTIONS
    if unknown:
        raise ConfigError(f"extraction: unknown option(s) {sorted(unknown)}; known: {sorted(OPTIONS)}")
    options = {"budget": threat.query_budget or 10000, "output": "probabilities", "top_k": 1, "student": "small_cnn",
               "checkpoints": 5, "pool_size": 2000, "methods": ["knockoff", "dfme", "cabage"]}
    options.update({key: value for key, value in params.items() if key in options})
    try:
        for name in ("budget", "top_k", "checkpoints", "pool_size"):
            options[name] = check_positive_int(name, options[name])
    except (TypeError, ValueError) as error:
        raise ConfigError(f"extraction: {error}") from None
    if options["output"] not in OUTPUTS:
        raise ConfigError(f"extraction: output must be one of {OUTPUTS}, got {options['output']!r}")
    if options["top_k"] > num_classes:
        raise ConfigError(f"extraction: top_k must be at most num_classes ({num_classes}), got {options['top_k']}")
    if options["student"] not in ZOO:
        raise ConfigError(f"extraction: unknown student {options['student']!r}; choose from {', '.join(sorted(ZOO))}")
    methods = options["methods"]
    if not isinstance(methods, list) or not methods or not all(isinstance(name, str) and name in METHODS for name in methods):
        raise ConfigError(f"extraction: methods must be a non-empty list of {sorted(METHODS)}, got {methods!r}")
    for name in methods:
        if not isinstance(params.get(name, {}), dict):
            raise ConfigError(f"extraction: {name} must be a table of that method's options, e.g. {name} = {{ seed = 1 }}")
    return options


def check(spec, config) -> None:
    """What `run` would refuse in this entry, found without a model or data (`secsuite validate`)."""
    params = spec.params()
    options = parse_options(params, config.threat, config.model.num_classes)
    # Knockoff's constructor only checks that its pool is non-empty; the real pool needs the data.
    placeholder_pool = Dataset(torch.zeros(1, 1, 1, 1), torch.zeros(1, dtype=torch.long), config.model.num_classes, "placeholder")
    for name in options["methods"]:
        make_method(name, params.get(name, {}), placeholder_pool, config.threat.seed, options["checkpoints"])


def run(context, spec) -> Section:
    params = spec.params()
    threat, victim_model = context.threat, context.classifier
    options = parse_options(params, threat, victim_model.num_classes)
    budget, output, top_k = options["budget"], options["output"], options["top_k"]
    student, checkpoints = options["student"], options["checkpoints"]
    pool = surrogate_pool(context.data.train, threat.data_access, options["pool_size"], threat.seed)
    probe = Probe(victim_model, context.eval_data)
    section = Section(victim_acc=(probe.victim_labels == probe.y).float().mean().item(), output=output, budget=budget,
                      student=student, n_eval=len(context.eval_data))
    for name in options["methods"]:
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
