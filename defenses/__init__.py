"""Defenses: distillation, adversarial training (PGD-AT, TRADES), RiFT, EBYD, certified training (auto_LiRPA).

The registry maps a `[[defend]] name` to "module:Class"; modules are imported only when used.
"""

from __future__ import annotations

import importlib

from defenses.base import Defense, DefenseResult

DEFENSES: dict[str, tuple[str, str]] = {
    "distillation": ("defenses.distillation:DefensiveDistillation", "defensive distillation at temperature T (Papernot 2016)"),
    "pgd_at": ("defenses.adversarial_training:PGDAT", "PGD adversarial training (Madry 2018), Linf/L2, eps warm-up"),
    "trades": ("defenses.adversarial_training:TRADES", "TRADES (Zhang 2019), beta-weighted KL robust loss"),
    "rift": ("defenses.rift:RiFT", "robust critical fine-tuning (ICCV 2023) of an adversarially trained model"),
    "certified_training": ("defenses.certified.training:CertifiedTraining", "IBP / CROWN-IBP certified training (auto_LiRPA)"),
    "ebyd": ("defenses.ebyd:EBYD", "EBYD: exposure by clean unlearning, detection, trigger recovery, BN-mask pruning"),
}


def make_defense(name: str, **params) -> Defense:
    if name not in DEFENSES:
        available = ", ".join(sorted(DEFENSES)) or "none yet"
        raise ValueError(f"unknown defense {name!r}; choose from {available}")
    module_name, _, class_name = DEFENSES[name][0].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ModuleNotFoundError, AttributeError):
        raise ValueError(f"defense {name!r} is not implemented yet (planned; see the README status table)") from None
    try:
        return cls(**params)
    except TypeError as error:
        raise ValueError(f"defense {name}: {error}") from None


__all__ = ["DEFENSES", "Defense", "DefenseResult", "make_defense"]
