"""Attacks: evasion (FGSM, PGD, Auto-PGD, Carlini-Wagner, ART adapter), extraction, unlearnable data, backdoors."""

from attacks.evasion import APGD, APGDT, FAB, FGSM, PGD, ArtAttack, Attack, AttackResult, CarliniWagnerL2, Square

EVASION_ATTACKS: dict[str, type[Attack]] = {"fgsm": FGSM, "pgd": PGD, "apgd": APGD, "apgd-t": APGDT, "fab": FAB, "square": Square,
                                            "cw": CarliniWagnerL2}

ATTACK_DESCRIPTIONS = {
    "fgsm": "Fast Gradient Sign Method (Linf, L2)",
    "pgd": "Projected Gradient Descent, random start, restarts, targeted (Linf, L2)",
    "apgd": "Auto-PGD (AutoAttack's APGD): momentum, self-halving step; loss = \"ce\" or \"dlr\" (Linf, L2)",
    "apgd-t": "AutoAttack's APGD-T: targeted DLR toward each of the top-9 other classes in turn (Linf, L2)",
    "fab": "FAB, fast adaptive boundary attack; target_classes = 9 for AutoAttack's FAB-T (Linf, L2)",
    "square": "Square Attack: score-based random search, no gradients, queries counted (Linf, L2)",
    "cw": "Carlini-Wagner L2 with per-example binary search on c (minimum-norm)",
    "art:<ClassName>": "any ART evasion attack by class name (kind = \"art\")",
}


def make_attack(name: str, eps: float, norm: str, targeted: bool = False, seed: int = 0, **params) -> Attack:
    """Build an evasion attack by name; `art:<ClassName>` runs an ART attack."""
    if name.startswith("art:"):
        return ArtAttack(name[4:], eps=eps, norm=norm, targeted=targeted, seed=seed, **params)
    if name not in EVASION_ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose from {', '.join(sorted(EVASION_ATTACKS))} or art:<ClassName>")
    cls = EVASION_ATTACKS[name]
    try:
        if cls.minimum_norm:
            return cls(targeted=targeted, seed=seed, **params)
        return cls(eps=eps, norm=norm, targeted=targeted, seed=seed, **params)
    except TypeError as error:
        raise ValueError(f"attack {name}: {error}") from None


__all__ = ["ATTACK_DESCRIPTIONS", "EVASION_ATTACKS", "Attack", "AttackResult", "make_attack"]
