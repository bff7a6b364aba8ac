"""The official AutoAttack code (pyautoattack) at settings equal to ours, and a fast model for comparisons that need
many images: every reference robust accuracy is stochastic, so the comparisons average over seeds on all 1797 digits."""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable

import pytest
import torch
from torch import nn

from secsuite.data import load_dataset
from secsuite.model import Classifier
from secsuite.training import train_classifier

REFERENCE_NORMS = {"linf": "Linf", "l2": "L2"}


@functools.lru_cache(maxsize=1)
def _trained_digits_mlp() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    digits = load_dataset("digits")
    torch.manual_seed(0)
    model = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)), 10, (1, 8, 8), name="digits_mlp")
    train_classifier(model, digits.train, epochs=30, seed=0)
    return model.eval(), torch.cat([digits.test.x, digits.train.x]), torch.cat([digits.test.y, digits.train.y])


@pytest.fixture(scope="session")
def digits_mlp() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """A 64-64-10 MLP trained on the digits training split (97.5% test accuracy), with all 1797 digits to attack:
    a forward pass over all of them takes about a millisecond."""
    return _trained_digits_mlp()


def _robust(model: Classifier, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return model.predict(x_adv) == y


def reference_square(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, n_queries: int,
                     seed: int, chunk: int = 300) -> torch.Tensor:
    """pyautoattack's SquareAttack as AutoAttack configures it, on chunks of `chunk` images (seeded seed * 1000 + i):
    one batch shares each window position, so smaller chunks make its robust accuracy less noisy."""
    from pyautoattack.square import SquareAttack

    attack = SquareAttack(model, norm=REFERENCE_NORMS[norm], n_queries=n_queries, eps=eps, p_init=0.8, n_restarts=1,
                          resc_schedule=False, device=model.device)
    points = []
    for i, start in enumerate(range(0, len(x), chunk)):
        attack.seed = seed * 1000 + i
        points.append(attack.perturb(x[start:start + chunk], y[start:start + chunk]))
    return _robust(model, torch.cat(points), y)


def reference_apgd_targeted(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, steps: int, seed: int) -> torch.Tensor:
    from pyautoattack.autopgd_base import APGDAttack_targeted

    attack = APGDAttack_targeted(model, n_iter=steps, norm=REFERENCE_NORMS[norm], eps=eps, seed=seed, n_target_classes=9, device=model.device)
    return _robust(model, attack.perturb(x, y), y)


def reference_fab(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, steps: int, target_classes: int,
                  restarts: int = 1, seed: int = 0) -> torch.Tensor:
    """FAB-T with `target_classes` > 0, untargeted FAB with 0."""
    from pyautoattack.fab_pt import FABAttack_PT

    attack = FABAttack_PT(model, norm=REFERENCE_NORMS[norm], n_iter=steps, eps=eps, n_restarts=restarts, seed=seed,
                          targeted=target_classes > 0, n_target_classes=target_classes, device=model.device)
    return _robust(model, attack.perturb(x, y), y)


def reference_autoattack(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, steps: int,
                         n_queries: int, seed: int):
    """The reference's standard version with every attack's iterations (and Square's queries) set as given; the
    components are rebuilt because their checkpoint schedules are fixed at construction."""
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    from pyautoattack.fab_pt import FABAttack_PT
    from pyautoattack.square import SquareAttack

    reference_norm = REFERENCE_NORMS[norm]
    adversary = AutoAttack(model, norm=reference_norm, eps=eps, version="standard", seed=seed, device=model.device)
    adversary.apgd = APGDAttack(model, n_restarts=1, n_iter=steps, eps=eps, norm=reference_norm, seed=seed, device=model.device)
    adversary.apgd_targeted = APGDAttack_targeted(model, n_restarts=1, n_iter=steps, eps=eps, norm=reference_norm, seed=seed,
                                                  n_target_classes=9, device=model.device)
    adversary.fab = FABAttack_PT(model, n_restarts=1, n_iter=steps, eps=eps, norm=reference_norm, seed=seed, n_target_classes=9,
                                 device=model.device)
    adversary.square = SquareAttack(model, p_init=0.8, n_queries=n_queries, eps=eps, norm=reference_norm, n_restarts=1, seed=seed,
                                    resc_schedule=False, device=model.device)
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
    return _robust(model, x_adv, y)


def mean_robust_accuracy(ours: Callable[[int], torch.Tensor], theirs: Callable[[int], torch.Tensor], seeds: int) -> tuple[float, float, list, list]:
    """Mean robust accuracy of ours and of the reference over seeds 0..seeds-1 (each callable maps a seed to a robust
    mask), with the per-seed values for the failure message."""
    our_runs = [ours(seed).float().mean().item() for seed in range(seeds)]
    their_runs = [theirs(seed).float().mean().item() for seed in range(seeds)]
    return statistics.mean(our_runs), statistics.mean(their_runs), our_runs, their_runs
