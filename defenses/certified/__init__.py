"""Certified robustness with auto_LiRPA 0.3: bounds (IBP, CROWN-IBP, CROWN, alpha-CROWN), certified training, audit section."""

from defenses.certified.certify import METHODS, Certifier, CertifyResult, certify

__all__ = ["METHODS", "Certifier", "CertifyResult", "certify"]
