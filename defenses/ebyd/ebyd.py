"""EBYD (Expose Before You Defend): unlearn to expose the backdoor, then detect, recover and remove it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from defenses.base import Defense, DefenseResult
from defenses.ebyd.detection import Evidence, Thresholds, is_backdoored
from defenses.ebyd.neural_cleanse import NeuralCleanse, RecoveredTrigger
from defenses.ebyd.removal import MaskPruning, RemovalResult, batchnorm_layers
from defenses.ebyd.unlearning import CleanUnlearning, UnlearnResult
from secsuite.data import Dataset
from secsuite.model import Classifier
from secsuite.threat import ThreatModel


@dataclass
class Exposure:
    unlearning: UnlearnResult
    evidence: Evidence
    triggers: list[RecoveredTrigger]  # Neural Cleanse: the exposed label first, then the reference labels
    backdoored: bool
    removal: RemovalResult | None = None
    blend_triggers: list[RecoveredTrigger] | None = None  # the same labels with a uniform blend mask (None: not run)

    @property
    def trigger(self) -> RecoveredTrigger:
        return self.triggers[0]


def clean_subset(train: Dataset, fraction: float, seed: int) -> Dataset:
    """The defender's clean set: a seeded random `fraction` of the training data."""
    if not 0 < fraction <= 1:
        raise ValueError(f"clean_fraction must be in (0, 1], got {fraction}")
    count = max(1, round(fraction * len(train)))
    index = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:count]
    return Dataset(train.x[index], train.y[index], train.num_classes, f"{train.name}/clean{count}")


class EBYD(Defense):
    name = "ebyd"

    def __init__(self, clean_fraction: float | None = None, unlearn_lr: float = 1e-4, unlearn_steps: int = 300,
                 bn_eval: bool = True, nc_steps: int = 150, reference_labels: int | None = None,
                 trigger_ratio: float = Thresholds.trigger_ratio, collapse: float = Thresholds.collapse,
                 blend: bool = True, blend_ratio: float = Thresholds.blend_ratio, remove: bool = True, mask_epochs: int = 20, mask_lr: float = 0.2, finetune_epochs: int = 0, seed: int = 0):
        if clean_fraction is not None and not 0 < clean_fraction <= 1:
            raise ValueError(f"clean_fraction must be in (0, 1], got {clean_fraction}")
        if reference_labels is not None and reference_labels < 1:
            raise ValueError(f"reference_labels must be >= 1, got {reference_labels}")
        if trigger_ratio <= 0:
            raise ValueError(f"trigger_ratio must be > 0, got {trigger_ratio}")
        if blend_ratio <= 0:
            raise ValueError(f"blend_ratio must be > 0, got {blend_ratio}")
        if not 0 <= collapse <= 1:
            raise ValueError(f"collapse must be in [0, 1], got {collapse}")
        self.clean_fraction, self.unlearn_lr, self.unlearn_steps, self.bn_eval = clean_fraction, unlearn_lr, unlearn_steps, bn_eval
        self.nc_steps, self.reference_labels, self.trigger_ratio, self.collapse = nc_steps, reference_labels, trigger_ratio, collapse
        self.blend, self.blend_ratio = blend, blend_ratio
        self.remove, self.mask_epochs, self.mask_lr, self.finetune_epochs, self.seed = remove, mask_epochs, mask_lr, finetune_epochs, seed
        # Built here so that bad parameters fail at construction.
        self._unlearning = CleanUnlearning(lr=unlearn_lr, max_steps=unlearn_steps, bn_eval=bn_eval, seed=seed)
        self._cleanse = NeuralCleanse(steps=nc_steps, seed=seed)
        self._blend_cleanse = NeuralCleanse(steps=nc_steps, seed=seed, shape="blend")
        self._pruning = MaskPruning(lr=mask_lr, epochs=mask_epochs, finetune_epochs=finetune_epochs, seed=seed)

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(trigger_ratio=self.trigger_ratio, collapse=self.collapse, blend_ratio=self.blend_ratio)

    def expose_label(self, classifier: Classifier, clean: Dataset) -> int:
        """Only the exposure: the label clean inputs collapse onto after unlearning."""
        return self._unlearning.run(classifier, clean).label

    def expose(self, classifier: Classifier, clean: Dataset) -> Exposure:
        """Unlearn, name the exposed label, compare its trigger with reference labels, and (optionally) remove."""
        unlearning = self._unlearning.run(classifier, clean)
        label = unlearning.label
        # Reference labels: all others by default (a robust median); fewer are taken in index order after
        # the exposed label, so the choice never depends on the model.
        count = classifier.num_classes - 1 if self.reference_labels is None else min(self.reference_labels, classifier.num_classes - 1)
        references = [(label + k) % classifier.num_classes for k in range(1, count + 1)]
        triggers = self._cleanse.scan(classifier, clean.x, clean.y, [label, *references])
        blends = self._blend_cleanse.scan(classifier, clean.x, clean.y, [label, *references]) if self.blend else None
        evidence = Evidence(label, unlearning.collapse, unlearning.stop_step, unlearning.variance,
                            triggers[0].l1, [t.l1 for t in triggers[1:]],
                            blends[0].l1 if blends else None, [t.l1 for t in blends[1:]] if blends else [])
        exposure = Exposure(unlearning, evidence, triggers, is_backdoored(evidence, self.thresholds), blend_triggers=blends)
        if self.remove and exposure.backdoored and batchnorm_layers(classifier.net):
            exposure.removal = self.remove_backdoor(classifier, exposure, clean)
        return exposure

    def remove_backdoor(self, classifier: Classifier, exposure: Exposure, clean: Dataset) -> RemovalResult:
        """BN-mask pruning of `classifier`, probed with the recovered trigger that gave the stronger evidence."""
        evidence, probe = exposure.evidence, exposure.triggers[0]
        if exposure.blend_triggers and evidence.blend_ratio < evidence.trigger_ratio:
            probe = exposure.blend_triggers[0]
        return self._pruning.run(classifier, exposure.unlearning.model, clean, probe.apply, evidence.label)

    def fit(self, classifier: Classifier, train_data: Dataset, threat: ThreatModel) -> DefenseResult:
        started = time.perf_counter()
        fraction = self.clean_fraction if self.clean_fraction is not None else min(threat.data_access, 0.05)
        exposure = self.expose(classifier, clean_subset(train_data, fraction, self.seed))
        defended = exposure.removal.classifier if exposure.removal is not None else self.copy_classifier(classifier)
        curve = exposure.unlearning
        log = [{"step": s, "clean_acc": a, "top_fraction": f} for s, a, f in zip(curve.steps, curve.clean_acc, curve.top_fraction)]
        details = {"backdoored": exposure.backdoored, "label": exposure.evidence.label, "collapse": exposure.evidence.collapse,
                   "trigger_ratio": exposure.evidence.trigger_ratio, "blend_ratio": exposure.evidence.blend_ratio, "pruned_threshold": exposure.removal.chosen.threshold if exposure.removal else None}
        return DefenseResult(defended, log, time.perf_counter() - started, curve.stop_step, details)
