from attacks.evasion.apgd import APGD
from attacks.evasion.art_adapter import ArtAttack
from attacks.evasion.autoattack import APGDT, AutoAttackResult, autoattack_attacks, run_autoattack
from attacks.evasion.base import Attack, AttackResult, perturbation_norm, project
from attacks.evasion.cw import CarliniWagnerL2
from attacks.evasion.fab import FAB
from attacks.evasion.fgsm import FGSM
from attacks.evasion.pgd import PGD
from attacks.evasion.square import Square

__all__ = ["APGD", "APGDT", "Attack", "AttackResult", "ArtAttack", "AutoAttackResult", "CarliniWagnerL2", "FAB", "FGSM", "PGD",
           "Square", "autoattack_attacks", "perturbation_norm", "project", "run_autoattack"]
