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
    # JSON-able; optional "markdown"/"html" renderings for the report. A parameter sweep goes under "<parameter>_sweep"
    # as one row per value ({"<parameter>": value, "<metric>": ...}), so that the report can flag one that changed nothing.
    details: dict[str, Any] = field(default_factory=dict)


def flat_sweeps(details: dict[str, Any]) -> list[str]:
    """The parameters whose "<parameter>_sweep" in `details` has two or more rows and the same metrics in every row."""
    flat = []
    for key, rows in details.items():
        parameter = key.removesuffix("_sweep")
        if parameter == key or not isinstance(rows, list) or len(rows) < 2 or not all(isinstance(row, dict) for row in rows):
            continue
        metrics = [name for name, value in rows[0].items()
                   if name != parameter and isinstance(value, (int, float)) and not isinstance(value, bool)]
        if metrics and all(row.get(name) == rows[0][name] for row in rows for name in metrics):
            flat.append(parameter)
    return flat


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
