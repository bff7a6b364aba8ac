"""Backdoor poisoning attacks: BadNets (patch) and Blended (pattern), all-to-one or all-to-all, with CA/ASR/RA."""

from attacks.backdoor.models import bn_cnn, train_model
from attacks.backdoor.poisoning import MODES, BackdoorAttack, BackdoorMetrics
from attacks.backdoor.triggers import TRIGGERS, BadNets, Blended, Trigger, make_trigger

__all__ = ["MODES", "TRIGGERS", "BackdoorAttack", "BackdoorMetrics", "BadNets", "Blended", "Trigger", "bn_cnn", "make_trigger", "train_model"]
