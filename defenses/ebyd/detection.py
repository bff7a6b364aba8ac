"""Backdoor label and model detection on the exposed (unlearned) model.

Label: the class clean inputs collapse onto. Model: the collapse alone also happens to clean
models at small scale, so a model is flagged only when the collapse is substantial AND the
exposed label has a recovered trigger much smaller than the reference labels' triggers, with the
same search budget for every label. Two trigger shapes are compared: the Neural Cleanse per-pixel
mask (patch backdoors such as BadNets) and a uniform blend x' = (1 - alpha) x + alpha p (global
backdoors such as Blended, which a per-pixel mask recovers poorly); either ratio can flag.
Thresholds come from clean models (`calibrate`), never from backdoored ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Thresholds:
    # Defaults: calibrate() (margin 0.75, cap 1) on three clean MNIST bn_cnn models, bench/backdoor.py cases 5-7:
    # seeds 2 and 3 (8000 images, 10 epochs) and seed 4 (4000 images, 6 epochs); smallest clean ratios 0.685
    # (mask, seed 4) and 1.21 (blend, seed 4), giving 0.514 and 0.908, rounded down here. None of them is a
    # clean model of the benchmark's false-positive check (seeds 0 and 1) or of the tests; see docs/backdoor.md.
    trigger_ratio: float = 0.51  # flag when |m|_1(exposed) / median |m|_1(reference) is at most this
    collapse: float = 0.2  # and at least this fraction of clean predictions fell on the exposed label
    blend_ratio: float = 0.90  # or when the blend trigger's alpha ratio is at most this


def _ratio(value: float | None, references: list[float] | None) -> float | None:
    if value is None or not references:
        return None
    return value / max(torch.tensor(references).median().item(), 1e-12)


@dataclass
class Evidence:
    label: int
    collapse: float  # fraction of clean predictions on the exposed label when unlearning stopped
    collapse_steps: int  # unlearning steps until clean accuracy reached the stop level
    variance: float  # variance of the predicted-class histogram (the paper's statistic)
    trigger_l1: float
    reference_l1: list[float]
    blend_l1: float | None = None  # alpha * H * W of the blend trigger on the exposed label (None: not run)
    blend_reference_l1: list[float] = field(default_factory=list)

    @property
    def trigger_ratio(self) -> float:
        return _ratio(self.trigger_l1, self.reference_l1)

    @property
    def blend_ratio(self) -> float | None:
        return _ratio(self.blend_l1, self.blend_reference_l1)


def is_backdoored(evidence: Evidence, thresholds: Thresholds) -> bool:
    if evidence.collapse < thresholds.collapse:
        return False
    blend = evidence.blend_ratio
    return evidence.trigger_ratio <= thresholds.trigger_ratio or (blend is not None and blend <= thresholds.blend_ratio)


def calibrate(clean: list[Evidence], margin: float = 0.75, cap: float = 1.0) -> Thresholds:
    """Thresholds that leave every given clean model unflagged with a margin.

    Each ratio threshold sits `margin` times below the smallest clean ratio of that kind, and never above
    `cap` (by design, not fitted: evidence of a backdoor means the exposed label's trigger is smaller than
    the median label's, however hard the labels clean models expose are to reach). The collapse
    threshold stays at its default, since clean models collapse too and the ratios do the separating.
    """
    if not clean:
        raise ValueError("clean: calibration needs at least one clean model")
    if not 0 < margin <= 1:
        raise ValueError(f"margin must be in (0, 1], got {margin}")
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    blends = [e.blend_ratio for e in clean if e.blend_ratio is not None]
    return Thresholds(trigger_ratio=min(cap, margin * min(e.trigger_ratio for e in clean)),
                      blend_ratio=min(cap, margin * min(blends)) if blends else Thresholds.blend_ratio)
