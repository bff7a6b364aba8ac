"""Models that break the Classifier contract, importable as python:tests.secsuite.hardening_models:NAME.

A module of its own (no pytest import) so that a CLI subprocess loading it behaves as for a user.
"""

from torch import nn


def five_outputs() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 5))


def twelve_outputs() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12))


class NaNLogits(nn.Module):
    """Finite weights, NaN logits: log of a negative number inside forward."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        return self.linear(x.flatten(1)) + (x.flatten(1)[:, :1] - 2).log()


def nan_logits() -> nn.Module:
    return NaNLogits()
