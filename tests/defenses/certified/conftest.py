"""Small models trained briefly on real data (sklearn digits, 8x8, the `digits` fixture), shared by the certified tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from secsuite.model import Classifier
from secsuite.training import train_classifier
from secsuite.zoo import build


class ResidualBNNet(nn.Module):
    """Conv + BatchNorm stem, one residual block with BatchNorm, average pooling, linear head."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(width)
        self.head = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(width * 16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(x)
        out = F.relu(out + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(out))))))
        return self.head(out)


def _trained(net: nn.Module, digits, name: str, epochs: int, mean=(0.3,), std=(0.4,)) -> Classifier:
    classifier = Classifier(net, 10, (1, 8, 8), mean=list(mean), std=list(std), name=name)
    train_classifier(classifier, digits.train, epochs=epochs, lr=3e-3, seed=0, description=name)
    return classifier.eval()


@pytest.fixture(scope="session")
def residual_bn(digits) -> Classifier:
    torch.manual_seed(0)
    return _trained(ResidualBNNet(), digits, "residual_bn", epochs=4)


@pytest.fixture(scope="session")
def avg_cnn(digits) -> Classifier:
    torch.manual_seed(0)
    return _trained(build("small_cnn", 10, (1, 8, 8), width=8, pool="avg"), digits, "small_cnn_avg", epochs=6)
