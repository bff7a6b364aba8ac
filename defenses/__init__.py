"""Defenses: distillation, adversarial training (PGD-AT, TRADES), RiFT, EBYD, certified training (auto_LiRPA).

The registry maps a `[[defend]] name` to "module:Class"; modules are imported only when used.
"""

from __future__ import annotations

import importlib

from defenses.base import Defense, DefenseResult

DEFENSES: dict[str, tuple[str, str]] = {
    # name: ("module:Class", one-line description)
}


def make_defense(name: str, **params) -> Defense:
    if name not in DEFENSES:
        available = ", ".join(sorted(DEFENSES)) or "none yet"
        raise ValueError(f"unknown defense {name!r}; choose from {available}")
    module_name, _, class_name = DEFENSES[name][0].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(**params)
    except TypeError as error:
        raise ValueError(f"defense {name}: {error}") from None


__all__ = ["DEFENSES", "Defense", "DefenseResult", "make_defense"]
