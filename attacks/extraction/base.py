"""Shared pieces of the extraction attacks: the evaluator's probe, the result, and the base class."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from attacks.evasion.base import check_positive_int
from attacks.extraction.victim import OUTPUTS, BlackBoxVictim
from secsuite.data import Dataset
from secsuite.model import Classifier


class Probe:
    """Held-out test images with their true labels and the victim's own labels.

    The victim's labels are computed once by the evaluator, outside the attacker's budget: they
    measure the clone (accuracy and agreement), they are never shown to the attack.
    """

    def __init__(self, victim: Classifier, test: Dataset):
        self.x, self.y = test.x, test.y.to(victim.device)
        self.victim_labels = victim.predict(test.x)

    def measure(self, clone: Classifier) -> tuple[float, float]:
        pred = clone.predict(self.x)
        return (pred == self.y).float().mean().item(), (pred == self.victim_labels).float().mean().item()


@dataclass
class CurvePoint:
    queries: int
    clone_acc: float
    agreement: float


@dataclass
class ExtractionResult:
    method: str
    clone: Classifier
    budget: int
    queries_spent: int
    output: str
    curve: list[CurvePoint] = field(default_factory=list)
    time_s: float = 0.0

    @property
    def clone_acc(self) -> float:
        return self.curve[-1].clone_acc if self.curve else float("nan")

    @property
    def agreement(self) -> float:
        return self.curve[-1].agreement if self.curve else float("nan")


def as_distribution(answer: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Victim answers as target distributions: labels one-hot, top-k renormalised, probabilities as they are."""
    if answer.dim() == 1:
        return F.one_hot(answer, num_classes).float()
    return answer / answer.sum(1, keepdim=True).clamp_min(1e-12)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    loss = -(target * F.log_softmax(logits, 1)).sum(1)
    return loss.mean() if reduction == "mean" else loss


class Extraction:
    """A model-extraction attack: spends at most the victim's budget training `clone`.

    Subclasses set `outputs` (victim answers they can learn from) and implement `_run`, calling
    `self._checkpoint(victim, clone)` after spending queries (`force=True` after a training stage) so the curve is recorded.
    """

    name = "extraction"
    outputs: tuple[str, ...] = OUTPUTS

    def __init__(self, seed: int = 0, checkpoints: int = 5):
        self.seed = int(seed)
        self.checkpoints = check_positive_int("checkpoints", checkpoints)

    def extract(self, victim: BlackBoxVictim, clone: Classifier, probe: Probe | None = None) -> ExtractionResult:
        victim.require(self.name, self.outputs)
        if tuple(clone.input_shape) != tuple(victim.input_shape) or clone.num_classes != victim.num_classes:
            raise ValueError(f"clone shape {clone.input_shape}/{clone.num_classes} classes does not match the victim's "
                             f"{victim.input_shape}/{victim.num_classes}")
        self._probe, self._next = probe, 1
        self._result = ExtractionResult(self.name, clone, victim.budget, 0, victim.output)
        start_spent, start = victim.spent, time.perf_counter()
        torch.manual_seed(self.seed)
        self._run(victim, clone)
        self._result.queries_spent = victim.spent - start_spent
        self._checkpoint(victim, clone, force=True)
        clone.eval()
        self._result.time_s = time.perf_counter() - start
        return self._result

    def _run(self, victim: BlackBoxVictim, clone: Classifier) -> None:
        raise NotImplementedError

    def _checkpoint(self, victim: BlackBoxVictim, clone: Classifier, force: bool = False) -> None:
        """Measure the clone each time another 1/checkpoints of the budget has been spent, or when forced."""
        due = victim.spent >= self._next * victim.budget / self.checkpoints
        if self._probe is None or not (due or force):
            return
        if self._result.curve and self._result.curve[-1].queries == victim.spent:
            return
        while self._next * victim.budget / self.checkpoints <= victim.spent:
            self._next += 1
        acc, agreement = self._probe.measure(clone)
        self._result.curve.append(CurvePoint(victim.spent, acc, agreement))

    def params(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}
