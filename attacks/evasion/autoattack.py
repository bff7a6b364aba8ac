"""AutoAttack (Croce & Hein 2020): APGD-T, and the standard / plus / rand cascades with RobustBench's numbers.

Each attack of a cascade runs only on the images still robust after the ones before it, and an image is credited
to the first attack that broke it. The versions, with AutoAttack's defaults (100 iterations, 9 target classes,
5000 Square queries):
  standard: APGD-CE, APGD-T, FAB-T, Square (RobustBench's leaderboard number)
  plus:     APGD-CE and APGD-DLR with 5 restarts each, FAB with 5 restarts, Square, APGD-T, FAB-T
  rand:     APGD-CE and APGD-DLR with each gradient averaged over 20 draws of a randomised model (EOT)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from attacks.evasion.apgd import APGD
from attacks.evasion.base import Attack, check_positive_int
from attacks.evasion.fab import FAB, ranked_other_classes
from attacks.evasion.square import Square
from secsuite.model import Classifier

VERSIONS = ("standard", "plus", "rand")


class APGDT(APGD):
    """APGD-T: APGD on the targeted DLR loss, once toward each of the `target_classes` classes the model ranks
    highest after the true one at the clean image, each run only on the images earlier runs left robust. The goal
    stays misclassification: any misclassified iterate breaks an image, whichever class it lands in."""

    name = "apgd-t"

    def __init__(self, eps: float = 0.1, norm: str = "linf", steps: int = 100, target_classes: int = 9,
                 rho: float = 0.75, momentum: float = 0.75, targeted: bool = False, seed: int = 0):
        if targeted:
            raise ValueError("targeted must be false: APGD-T picks its own target classes (set target_classes)")
        super().__init__(eps, norm, steps=steps, loss="dlr", restarts=1, rho=rho, momentum=momentum, seed=seed)
        self.target_classes = check_positive_int("target_classes", target_classes)

    def _perturb(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if classifier.num_classes < 4:
            raise ValueError(f"apgd-t's targeted DLR loss needs at least 4 classes, the model has {classifier.num_classes}")
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            logits = classifier(x)
        result, robust = x.clone(), logits.argmax(1) == y
        for target_class in ranked_other_classes(logits, self.target_classes):
            remaining = robust.nonzero().squeeze(1)
            if not len(remaining):
                break
            found, broken = self._one_run(classifier, x[remaining], y[remaining], target_class[remaining], generator)
            result[remaining[broken]] = found[broken]
            robust[remaining[broken]] = False
        return result


class APGDEOT(APGD):
    """APGD for randomised models: each iterate's loss and gradient are averaged over `draws` forward/backward
    passes (expectation over transformation); success is read off the last draw, as in the reference."""

    def __init__(self, eps: float = 0.1, norm: str = "linf", steps: int = 100, loss: str = "ce", draws: int = 20, seed: int = 0):
        super().__init__(eps, norm, steps=steps, loss=loss, restarts=1, seed=seed)
        self.draws = check_positive_int("draws", draws)

    def _value_and_grad(self, classifier: Classifier, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None):
        value_sum, grad_sum = 0.0, 0.0
        for _ in range(self.draws):
            value, grad, logits = super()._value_and_grad(classifier, x_adv, y, target)
            value_sum, grad_sum = value_sum + value, grad_sum + grad
        return value_sum / self.draws, grad_sum / self.draws, logits


def autoattack_attacks(eps: float, norm: str = "linf", version: str = "standard", seed: int = 0, steps: int = 100,
                       n_queries: int = 5000, target_classes: int = 9, eot_draws: int = 20) -> list[tuple[str, Attack]]:
    """The cascade of `version`, in order, as (name, attack); names as in the reference."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    common = {"eps": eps, "norm": norm, "seed": seed, "steps": steps}
    targeted = [("apgd-t", APGDT(target_classes=target_classes, **common)),
                ("fab-t", FAB(target_classes=target_classes, **common))]
    square = ("square", Square(eps=eps, norm=norm, n_queries=n_queries, seed=seed))
    if version == "standard":
        return [("apgd-ce", APGD(loss="ce", **common)), targeted[0], targeted[1], square]
    if version == "plus":
        return [("apgd-ce", APGD(loss="ce", restarts=5, **common)), ("apgd-dlr", APGD(loss="dlr", restarts=5, **common)),
                ("fab", FAB(restarts=5, **common)), square, *targeted]
    return [("apgd-ce", APGDEOT(loss="ce", draws=eot_draws, **common)), ("apgd-dlr", APGDEOT(loss="dlr", draws=eot_draws, **common))]


@dataclass
class AutoAttackResult:
    """One AutoAttack evaluation: RobustBench's fields (accuracies as fractions) and each image's outcome."""

    version: str
    norm: str
    eps: float
    clean_acc: float
    autoattack_acc: float
    number_forward_passes: int  # images through the model, clean pass included
    number_backward_passes: int
    broken_by: dict[str, int]  # images first broken by each attack, in cascade order
    robust_acc_after: dict[str, float]  # robust accuracy after each attack
    seconds: dict[str, float]  # wall time of each attack
    passes: dict[str, tuple[int, int]]  # forward and backward passes (images) of each attack
    robust: torch.Tensor  # bool (N,): correct on the clean image and on every attack's point
    x_adv: torch.Tensor  # the point that broke each broken image; the clean image otherwise


def run_autoattack(classifier: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf",
                   version: str = "standard", seed: int = 0, batch_size: int = 500, steps: int = 100,
                   n_queries: int = 5000, target_classes: int = 9, eot_draws: int = 20,
                   attacks: list[tuple[str, Attack]] | None = None, robust: torch.Tensor | None = None) -> AutoAttackResult:
    """Run the `version` cascade (or `attacks`, a custom one) on (x, y), `batch_size` images at a time. To resume
    mid-cascade, pass the attacks still to run and `robust`, the mask the earlier ones left."""
    batch_size = check_positive_int("batch_size", batch_size)
    cascade = attacks if attacks is not None else autoattack_attacks(eps, norm, version, seed, steps, n_queries, target_classes, eot_draws)
    x, y = x.to(classifier.device), y.to(classifier.device)
    classifier.check_inputs(x, y)
    if robust is not None and robust.shape != y.shape:
        raise ValueError(f"robust must have shape {tuple(y.shape)} (one flag per image), got {tuple(robust.shape)}")
    forward0, backward0 = classifier.counters()
    clean_correct = classifier.predict(x, batch_size) == y
    clean_acc = clean_correct.float().mean().item()
    robust = clean_correct if robust is None else clean_correct & robust.to(y.device)
    x_adv = x.clone()
    broken_by, robust_after, seconds, passes = {}, {}, {}, {}
    for name, attack in cascade:
        start, counted = time.perf_counter(), classifier.counters()
        remaining = robust.nonzero().squeeze(1)
        newly = 0
        for chunk in remaining.split(batch_size):
            result = attack.attack(classifier, x[chunk], y[chunk])
            broken = ~result.robust
            x_adv[chunk[broken]] = result.x_adv[broken]
            robust[chunk[broken]] = False
            newly += int(broken.sum())
        broken_by[name], robust_after[name] = newly, robust.float().mean().item()
        seconds[name] = time.perf_counter() - start
        passes[name] = (classifier.n_forward - counted[0], classifier.n_backward - counted[1])
    forward, backward = classifier.counters()
    return AutoAttackResult(
        version=version if attacks is None else "custom", norm=norm, eps=float(eps), clean_acc=clean_acc,
        autoattack_acc=robust.float().mean().item(), number_forward_passes=forward - forward0,
        number_backward_passes=backward - backward0, broken_by=broken_by, robust_acc_after=robust_after,
        seconds=seconds, passes=passes, robust=robust, x_adv=x_adv,
    )
