"""Evaluation of a classifier under a threat model: clean accuracy, attacks over the eps grid, worst case, validity checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from secsuite.data import Dataset
from secsuite.distributed import World
from secsuite.errors import ModelError
from secsuite.model import Classifier, evaluation_mode
from secsuite.progress import progress_bar
from secsuite.report import AttackEntry, CleanSection, EpsResult, ReportWarning, WorstCaseEntry
from secsuite.resume import RunState
from secsuite.threat import EvaluateSpec, ThreatModel

ZERO_GRADIENT_NORM = 1e-10
# (stronger, weaker): an iterative attack that leaves more examples robust than its one-step special case is not working.
STRONGER_THAN = {("pgd", "fgsm"), ("apgd", "fgsm")}


@dataclass
class AttackEvaluation:
    """Per-attack entries plus the per-example robust flags that the worst case is built from."""

    entries: list[AttackEntry]
    worst_case: list[WorstCaseEntry]
    robust: dict[str, dict[float, torch.Tensor]] = field(default_factory=dict)


def clean_section(classifier: Classifier, data: Dataset, batch_size: int = 256) -> CleanSection:
    """Clean accuracy and the gradient checks, in eval mode (the caller's mode is restored); a model with NaN or
    infinite logits is a ModelError (nothing it reports means anything)."""
    with evaluation_mode(classifier):
        return _clean_section(classifier, data, batch_size)


def _clean_section(classifier: Classifier, data: Dataset, batch_size: int) -> CleanSection:
    correct, zero_grad, non_finite_grad, probability_like = 0, 0, 0, True
    for start in range(0, len(data), batch_size):
        x = data.x[start : start + batch_size].to(classifier.device).requires_grad_(True)
        y = data.y[start : start + batch_size].to(classifier.device)
        logits = classifier(x)
        finite_logits = torch.isfinite(logits.detach()).all(1)
        if not finite_logits.all():
            first = start + int((~finite_logits).nonzero()[0])
            raise ModelError(f"model {classifier.name} returns NaN or infinite logits (first on evaluation image {first}); "
                             "check its weights and the mean/std normalisation")
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
        correct += (logits.argmax(1) == y).sum().item()
        finite_grad = torch.isfinite(grad.flatten(1)).all(1)
        non_finite_grad += (~finite_grad).sum().item()
        zero_grad += (finite_grad & (grad.flatten(1).norm(dim=1) < ZERO_GRADIENT_NORM)).sum().item()
        logits = logits.detach()
        probability_like &= bool((logits >= 0).all() and (logits <= 1).all() and torch.allclose(logits.sum(1), torch.ones(len(x), device=x.device), atol=1e-3))
    classifier.reset_counters()
    n = max(len(data), 1)
    chance = max(data.class_counts(), default=0) / n
    return CleanSection(clean_acc=correct / n, n_examples=len(data), chance_acc=chance, zero_gradient_fraction=zero_grad / n,
                        non_finite_gradient_fraction=non_finite_grad / n, outputs_look_like_probabilities=probability_like)


def attack_label(spec: EvaluateSpec) -> str:
    return f"art:{spec.name}" if spec.kind == "art" else spec.name


def unique_labels(specs: list[EvaluateSpec]) -> list[str]:
    """One report label per attack spec: the attack's name, and `name#k` for its k-th repeat (k >= 2),
    so that two entries of the same attack with different parameters never share flags or credit."""
    seen: dict[str, int] = {}
    labels = []
    for spec in specs:
        name = attack_label(spec)
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return labels


def base_name(label: str) -> str:
    """The attack behind a report label (`pgd#2` -> `pgd`)."""
    return label.partition("#")[0]


def evaluate_attacks(classifier: Classifier, data: Dataset, threat: ThreatModel, specs: list[EvaluateSpec], batch_size: int = 256,
                     state: RunState | None = None, world: World | None = None) -> AttackEvaluation:
    """Run every attack spec at every eps of the threat model, in eval mode (the caller's mode is restored);
    worst case = pointwise minimum over the attacks built for the threat's norm. An attack of another norm
    (CW, an L2 minimum-norm attack, under an Linf threat) is reported but does not count: its examples are
    scored under the threat's norm although it never searched that ball.

    With `state`, each finished (attack, eps) outcome is checkpointed and, when resuming, reused.
    With a distributed `world`, each rank attacks its share of the batches and every rank gets the merged outcome.
    """
    with evaluation_mode(classifier):
        return _evaluate_attacks(classifier, data, threat, specs, batch_size, state, world or World())


def _evaluate_attacks(classifier: Classifier, data: Dataset, threat: ThreatModel, specs: list[EvaluateSpec], batch_size: int,
                      state: RunState | None, world: World) -> AttackEvaluation:
    from attacks import make_attack

    clean_correct = classifier.predict(data.x, batch_size).cpu() == data.y
    n_correct = max(int(clean_correct.sum()), 1)
    attack_specs = [s for s in specs if s.kind in ("attack", "art")]
    prototypes = [make_attack(attack_label(s), threat.eps[-1], threat.norm, threat.targeted, threat.seed, **s.params()) for s in attack_specs]
    n_batches = -(-len(data) // batch_size)
    total = sum(n_batches * (1 if p.minimum_norm else sum(1 for e in threat.eps if e > 0)) for p in prototypes)
    entries, robust_flags = [], {}
    with progress_bar("attacks", total) as advance:
        for index, (spec, label, prototype) in enumerate(zip(attack_specs, unique_labels(attack_specs), prototypes)):
            checkpoint = f"{index}-{attack_label(spec)}"
            flags: dict[float, torch.Tensor] = {}
            results: list[EpsResult] = []
            if prototype.minimum_norm:
                outcome = _outcome(prototype, f"{checkpoint}-minimum-norm", classifier, data, batch_size, advance, state, world)
                norms = outcome["norms"][threat.norm]
                for eps in threat.eps:
                    broken = outcome["success"] & (norms <= eps + 1e-6) & clean_correct
                    flags[eps] = clean_correct & ~broken
                    results.append(_eps_result(eps, flags[eps], broken, norms, n_correct, outcome if eps == threat.eps[-1] else None))
                unbounded = float((outcome["success"] & clean_correct).sum()) / n_correct
            else:
                unbounded = None
                for eps in threat.eps:
                    if eps == 0:
                        flags[eps] = clean_correct.clone()
                        results.append(EpsResult(eps=0.0, robust_acc=float(clean_correct.float().mean()), success_rate=0.0))
                        continue
                    attack = make_attack(attack_label(spec), eps, threat.norm, threat.targeted, threat.seed, **spec.params())
                    outcome = _outcome(attack, f"{checkpoint}-eps{eps!r}", classifier, data, batch_size, advance, state, world)
                    flags[eps] = outcome["robust"] & clean_correct
                    broken = clean_correct & ~outcome["robust"]
                    results.append(_eps_result(eps, flags[eps], broken, outcome["norms"][threat.norm], n_correct, outcome))
            robust_flags[label] = flags
            entries.append(AttackEntry(name=label, norm=threat.norm, attack_norm=prototype.norm, in_worst_case=prototype.norm == threat.norm,
                                       minimum_norm=prototype.minimum_norm, params=_jsonable(spec.params()),
                                       unbounded_success_rate=unbounded, results=results))
    counted = {entry.name: robust_flags[entry.name] for entry in entries if entry.in_worst_case}
    return AttackEvaluation(entries, worst_case_from_flags(counted, threat.eps, clean_correct), robust_flags)


def _jsonable(params: dict) -> dict:
    return {k: v if isinstance(v, (int, float, str, bool, type(None), list)) else str(v) for k, v in params.items()}


def _outcome(attack, key: str, classifier: Classifier, data: Dataset, batch_size: int, advance, state: RunState | None, world: World) -> dict:
    """One attack at one eps over the data: rank 0's checkpoint when resuming, otherwise computed (sharded) and checkpointed."""
    outcome = world.broadcast(state.load_evaluation(key) if state is not None and world.is_main else None)
    if outcome is not None:
        advance(-(-len(data) // batch_size))
        return outcome
    outcome = _run_batches(attack, classifier, data, batch_size, advance, world)
    if state is not None and world.is_main:
        state.save_evaluation(key, outcome)
    return outcome


def _run_batches(attack, classifier: Classifier, data: Dataset, batch_size: int, advance, world: World) -> dict:
    starts = list(range(0, len(data), batch_size))
    parts = {}
    for start in world.mine(starts):
        result = attack.attack(classifier, data.x[start : start + batch_size], data.y[start : start + batch_size])
        parts[start] = (result.robust.cpu(), result.success.cpu(), result.linf.cpu(), result.l2.cpu(), result.n_forward, result.n_backward, result.time_s)
        advance()
    parts = world.gather(parts)
    advance(len(starts) - len(world.mine(starts)))
    robust, success, linf, l2, n_forward, n_backward, time_s = zip(*(parts[start] for start in starts))
    return {"robust": torch.cat(robust), "success": torch.cat(success), "norms": {"linf": torch.cat(linf), "l2": torch.cat(l2)},
            "n_forward": sum(n_forward), "n_backward": sum(n_backward), "time_s": sum(time_s)}


def _eps_result(eps: float, robust: torch.Tensor, broken: torch.Tensor, norms: torch.Tensor, n_correct: int, outcome: dict | None) -> EpsResult:
    median = float(norms[broken].median()) if broken.any() else None
    return EpsResult(
        eps=eps, robust_acc=float(robust.float().mean()), success_rate=float(broken.sum()) / n_correct, median_norm=median,
        number_forward_passes=outcome["n_forward"] if outcome else 0, number_backward_passes=outcome["n_backward"] if outcome else 0,
        time_s=outcome["time_s"] if outcome else 0.0,
    )


def worst_case_from_flags(flags: dict[str, dict[float, torch.Tensor]], eps_grid: list[float], clean_correct: torch.Tensor) -> list[WorstCaseEntry]:
    """Pointwise minimum over attacks; `broken_by` credits each example to the first attack (in order) that broke it."""
    if not flags:
        return []
    entries = []
    for eps in eps_grid:
        alive = clean_correct.clone()
        broken_by = {}
        for name, per_eps in flags.items():
            newly = alive & ~per_eps[eps]
            broken_by[name] = int(newly.sum())
            alive &= per_eps[eps]
        entries.append(WorstCaseEntry(eps=eps, robust_acc=float(alive.float().mean()), broken_by=broken_by))
    return entries


def chance_level_bound(chance_acc: float, n_examples: int) -> float:
    """Highest clean accuracy still read as chance: the majority-class share plus three binomial standard
    errors (an untrained model's accuracy on n examples scatters around it by that much)."""
    return chance_acc + 3 * (chance_acc * (1 - chance_acc) / max(n_examples, 1)) ** 0.5


def validity_warnings(clean: CleanSection, attacks: list[AttackEntry], subject: str | None = None, n_examples: int | None = None) -> list[ReportWarning]:
    """AutoAttack-style sanity checks on one model's results."""
    warnings = []
    tolerance = 1.0 / max(n_examples or clean.n_examples, 1) + 1e-9
    if clean.chance_acc is not None and clean.clean_acc <= chance_level_bound(clean.chance_acc, clean.n_examples):
        warnings.append(ReportWarning(code="chance_level", subject=subject, message=(
            f"clean accuracy {100 * clean.clean_acc:.1f}% is no better than always answering the most common class "
            f"({100 * clean.chance_acc:.1f}% of these {clean.n_examples} examples): the model is untrained or its weights, "
            "labels or normalisation do not match the data, and every robustness number below is meaningless")))
    for entry in attacks:
        if not entry.in_worst_case:
            warnings.append(ReportWarning(code="other_norm_attack", subject=subject, message=(
                f"{entry.name} is an {entry.attack_norm} attack under an {entry.norm} threat: its examples are scored in "
                f"{entry.norm} but it never searched that ball, so it is shown but left out of the worst case; "
                f"use an {entry.norm} attack as the strong check")))
    if clean.zero_gradient_fraction > 0.1:
        warnings.append(ReportWarning(code="zero_gradients", subject=subject, message=(
            f"{100 * clean.zero_gradient_fraction:.0f}% of examples have a zero input gradient: gradient-based attacks "
            "(FGSM, PGD) are masked and overestimate robustness; trust margin-based or minimum-norm attacks (CW) instead")))
    if clean.non_finite_gradient_fraction > 0:
        warnings.append(ReportWarning(code="non_finite_gradients", subject=subject, message=(
            f"{100 * clean.non_finite_gradient_fraction:.1f}% of examples have a NaN or infinite input gradient: gradient-based "
            "attacks (FGSM, PGD) cannot move them and overestimate robustness; find the operation in the model that is not "
            "differentiable there (e.g. sqrt or log at 0)")))
    if clean.outputs_look_like_probabilities:
        warnings.append(ReportWarning(code="probability_outputs", subject=subject, message=(
            "model outputs look like probabilities (in [0,1], rows sum to 1), not logits; remove the final softmax "
            "or the cross-entropy gradients are wrong")))
    for entry in attacks:
        ordered = sorted(entry.results, key=lambda r: r.eps)
        for before, after in zip(ordered, ordered[1:]):
            if after.robust_acc > before.robust_acc + tolerance:
                warnings.append(ReportWarning(code="not_monotone", subject=subject, message=(
                    f"{entry.name}: robust accuracy rises from {100 * before.robust_acc:.1f}% at eps {before.eps:g} "
                    f"to {100 * after.robust_acc:.1f}% at eps {after.eps:g}; the attack is not converging")))
                break
    for stronger in attacks:
        for weaker in attacks:
            if (base_name(stronger.name), base_name(weaker.name)) not in STRONGER_THAN:
                continue
            weaker_acc = {r.eps: r.robust_acc for r in weaker.results}
            for result in stronger.results:
                if result.eps in weaker_acc and result.robust_acc > weaker_acc[result.eps] + tolerance:
                    warnings.append(ReportWarning(code="weaker_than_weaker_attack", subject=subject, message=(
                        f"{stronger.name} leaves {100 * result.robust_acc:.1f}% robust at eps {result.eps:g}, more than {weaker.name} "
                        f"({100 * weaker_acc[result.eps]:.1f}%): a sign of gradient masking or too few steps")))
                    break
    return warnings
