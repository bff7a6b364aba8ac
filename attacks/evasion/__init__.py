from attacks.evasion.apgd import APGD
from attacks.evasion.art_adapter import ArtAttack
from attacks.evasion.base import Attack, AttackResult, perturbation_norm, project
from attacks.evasion.cw import CarliniWagnerL2
from attacks.evasion.fgsm import FGSM
from attacks.evasion.pgd import PGD

__all__ = ["APGD", "Attack", "AttackResult", "ArtAttack", "CarliniWagnerL2", "FGSM", "PGD", "perturbation_norm", "project"]
