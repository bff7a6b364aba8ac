"""A model factory importable as python:tests.secsuite.factories:tiny."""

from torch import nn


def tiny() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
