"""Model extraction under a query budget: a black-box victim wrapper, DFME, CaBaGe and Knockoff."""

from attacks.extraction.base import CurvePoint, Extraction, ExtractionResult, Probe
from attacks.extraction.cabage import CaBaGe
from attacks.extraction.dfme import DFME
from attacks.extraction.knockoff import Knockoff
from attacks.extraction.victim import OUTPUTS, BlackBoxVictim, BudgetExceeded, UnsupportedOutput

METHODS = {"dfme": DFME, "cabage": CaBaGe, "knockoff": Knockoff}

__all__ = ["METHODS", "OUTPUTS", "BlackBoxVictim", "BudgetExceeded", "CaBaGe", "CurvePoint", "DFME", "Extraction",
           "ExtractionResult", "Knockoff", "Probe", "UnsupportedOutput"]
