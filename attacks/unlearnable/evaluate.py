"""The evaluation protocol for unlearnable data: train the same architecture on clean and on
protected training sets (plain and adversarial training) and compare clean test accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from attacks.evasion import PGD
from secsuite.data import Dataset
from secsuite.model import Classifier
from secsuite.training import train_classifier
from secsuite.zoo import build


@dataclass
class TrainingRecipe:
    """How the evaluated models are trained; `adversarial_eps` > 0 means PGD adversarial training."""

    arch: str = "small_cnn"
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    adversarial_eps: float = 0.0
    adversarial_steps: int = 5
    norm: str = "linf"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size}")
        if self.adversarial_eps < 0:
            raise ValueError(f"adversarial_eps must be >= 0, got {self.adversarial_eps}")
        if self.adversarial_steps < 1:
            raise ValueError(f"adversarial_steps must be >= 1, got {self.adversarial_steps}")

    @property
    def regime(self) -> str:
        return f"pgd-at {self.norm} eps={self.adversarial_eps:g}" if self.adversarial_eps > 0 else "erm"


def train_model(train: Dataset, recipe: TrainingRecipe, device: torch.device | str = "cpu") -> Classifier:
    """A fresh `recipe.arch` (seeded init) trained on `train` under the recipe's regime (ERM or PGD-AT)."""
    torch.manual_seed(recipe.seed)
    classifier = Classifier(build(recipe.arch, train.num_classes, train.input_shape), train.num_classes, train.input_shape,
                            name=recipe.arch).to(device)
    loss_fn = None
    if recipe.adversarial_eps > 0:
        pgd = PGD(eps=recipe.adversarial_eps, norm=recipe.norm, steps=recipe.adversarial_steps, seed=recipe.seed)

        def loss_fn(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(model(pgd.attack(model, x, y).x_adv), y)

    options = {"loss_fn": loss_fn} if loss_fn is not None else {}
    train_classifier(classifier, train, epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size, seed=recipe.seed,
                     description=f"{recipe.regime} on {train.name}", **options)
    return classifier


def train_and_test(train: Dataset, test: Dataset, recipe: TrainingRecipe, device: torch.device | str = "cpu") -> float:
    """Train a fresh `recipe.arch` on `train` and return its accuracy on the clean `test`."""
    return train_model(train, recipe, device).accuracy(test.x, test.y)
