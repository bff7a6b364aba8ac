"""EBYD: Clean Unlearning exposure, backdoor label/model detection, Neural Cleanse recovery, BN-mask pruning removal."""

from defenses.ebyd.detection import Evidence, Thresholds, calibrate, is_backdoored
from defenses.ebyd.ebyd import EBYD, Exposure, clean_subset
from defenses.ebyd.neural_cleanse import NeuralCleanse, RecoveredTrigger, anomaly_index
from defenses.ebyd.removal import MaskPruning, RemovalResult
from defenses.ebyd.unlearning import CleanUnlearning, UnlearnResult


def der(ca_before: float, ca_after: float, asr_before: float, asr_after: float) -> float:
    """Defense effectiveness rating [max(0, dASR) - max(0, dCA) + 1] / 2 (1 = perfect, 0.5 = no effect)."""
    return (max(0.0, asr_before - asr_after) - max(0.0, ca_before - ca_after) + 1) / 2


__all__ = ["EBYD", "CleanUnlearning", "Evidence", "Exposure", "MaskPruning", "NeuralCleanse", "RecoveredTrigger",
           "RemovalResult", "Thresholds", "UnlearnResult", "anomaly_index", "calibrate", "clean_subset", "der", "is_backdoored"]
