"""Run any ART evasion attack, by class name, under our threat model and result type.

ART works on numpy arrays, so this adapter is the one place with a numpy round trip; our own
attacks never leave torch.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from attacks.evasion.base import Attack
from secsuite.model import Classifier


def art_estimator(classifier: Classifier):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=classifier, loss=torch.nn.CrossEntropyLoss(), input_shape=classifier.input_shape,
        nb_classes=classifier.num_classes, clip_values=(0.0, 1.0), device_type="gpu" if classifier.device.type == "cuda" else "cpu",
    )


def art_attack_class(name: str):
    import art.attacks.evasion as evasion
    from art.attacks.attack import EvasionAttack

    # Module attributes such as __class__ are classes too; only ART's evasion attacks may be built.
    cls = getattr(evasion, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, EvasionAttack)):
        raise ValueError(f"unknown ART evasion attack {name!r} (see art.attacks.evasion)")
    return cls


class ArtAttack(Attack):
    """`ArtAttack("ProjectedGradientDescent", eps=0.1, max_iter=20)`: eps, norm and targeted map onto ART's arguments."""

    name = "art"

    def __init__(self, art_name: str, eps: float = 0.1, norm: str = "linf", targeted: bool = False, seed: int = 0, **art_params):
        super().__init__(eps, norm, targeted, seed)
        self.art_name = art_name
        self.art_class = art_attack_class(art_name)
        accepted = inspect.signature(self.art_class.__init__).parameters
        unknown = sorted(set(art_params) - set(accepted))
        if unknown:
            raise ValueError(f"{art_name} does not take parameter(s) {', '.join(unknown)}")
        self.art_params = dict(art_params)
        mapped = {"eps": self.eps, "norm": np.inf if norm == "linf" else 2, "targeted": self.targeted}
        for key, value in mapped.items():
            if key in accepted:
                self.art_params.setdefault(key, value)
        if "eps_step" in accepted and "eps_step" not in art_params and "max_iter" in accepted:
            self.art_params["eps_step"] = 2.5 * self.eps / self.art_params.get("max_iter", 100)
        self.minimum_norm = "eps" not in accepted
        self.name = f"art:{art_name}"

    def _perturb(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        np.random.seed(self.seed)
        attack = self.art_class(art_estimator(classifier), **self.art_params)
        labels = (target if self.targeted else y).cpu().numpy()
        one_hot = np.eye(classifier.num_classes, dtype=np.float32)[labels]
        x_adv = attack.generate(x.detach().cpu().numpy(), y=one_hot)
        return torch.from_numpy(np.asarray(x_adv, dtype=np.float32)).to(x.device).clamp(0, 1)
