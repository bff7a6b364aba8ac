"""Backdoor label and model detection on the exposed (unlearned) model.

Label: the class clean inputs collapse onto. Model: the collapse alone also happens to clean
models at small scale, so a model is flagged only when the collapse is substantial AND the
exposed label has a Neural Cleanse trigger much smaller than reference labels (ratio of |m|_1
to the reference median). Thresholds come from clean models (`calibrate`), never backdoored ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Thresholds:
    # Defaults measured on clean bn_cnn models (see docs/backdoor.md): their ratios were >= 0.8.
    trigger_ratio: float = 0.6  # flag when |m|_1(exposed) / median |m|_1(reference) is at most this
    collapse: float = 0.2  # and at least this fraction of clean predictions fell on the exposed label


@dataclass
class Evidence:
    label: int
    collapse: float  # fraction of clean predictions on the exposed label when unlearning stopped
    collapse_steps: int  # unlearning steps until clean accuracy reached the stop level
    variance: float  # variance of the predicted-class histogram (the paper's statistic)
    trigger_l1: float
    reference_l1: list[float]

    @property
    def trigger_ratio(self) -> float:
        return self.trigger_l1 / max(torch.tensor(self.reference_l1).median().item(), 1e-12)


def is_backdoored(evidence: Evidence, thresholds: Thresholds) -> bool:
    return evidence.trigger_ratio <= thresholds.trigger_ratio and evidence.collapse >= thresholds.collapse


def calibrate(clean: list[Evidence], margin: float = 0.75) -> Thresholds:
    """Thresholds that leave every given clean model unflagged with a margin.

    The ratio threshold sits `margin` times below the smallest clean ratio; the collapse threshold
    stays at its default, since clean models collapse too and the ratio does the separating.
    """
    if not clean:
        raise ValueError("clean: calibration needs at least one clean model")
    if not 0 < margin <= 1:
        raise ValueError(f"margin must be in (0, 1], got {margin}")
    return Thresholds(trigger_ratio=margin * min(e.trigger_ratio for e in clean))
