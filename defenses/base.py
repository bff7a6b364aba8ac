"""Defense interface: `fit(classifier, train_data, threat) -> DefenseResult`."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from secsuite.data import Dataset
from secsuite.model import Classifier
from secsuite.threat import ThreatModel


@dataclass
class DefenseResult:
    classifier: Classifier  # the defended model, ready to evaluate
    log: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch (loss, accuracy, eps, ...)
    training_time_s: float = 0.0
    epochs: int = 0
    details: dict[str, Any] = field(default_factory=dict)  # JSON-able; optional "markdown"/"html" renderings for the report


class Defense:
    """Base class: parameters are validated in the constructor, `fit` never modifies the input classifier."""

    name = "defense"

    def fit(self, classifier: Classifier, train_data: Dataset, threat: ThreatModel) -> DefenseResult:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None), list))}

    @staticmethod
    def copy_classifier(classifier: Classifier) -> Classifier:
        return copy.deepcopy(classifier)
