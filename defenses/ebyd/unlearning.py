"""Clean Unlearning (CUL): gradient ascent on cross-entropy over a small clean set, recording the class collapse.

With a backdoor, the cheapest way to stop predicting clean labels is to fire the backdoor, so
clean inputs collapse onto the target label. The official code keeps BatchNorm in eval mode
(running statistics frozen) during unlearning; `bn_eval=False` updates them instead.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from secsuite.data import Dataset
from secsuite.model import Classifier
from secsuite.progress import progress_bar


@dataclass
class UnlearnResult:
    model: Classifier  # the exposed (unlearned) copy
    steps: list[int] = field(default_factory=list)  # step index of each curve point
    clean_acc: list[float] = field(default_factory=list)  # accuracy on the clean set
    top_fraction: list[float] = field(default_factory=list)  # fraction of predictions on the most-predicted class
    top_label: list[int] = field(default_factory=list)
    histogram: list[float] = field(default_factory=list)  # final predicted-class histogram (fractions)
    stop_step: int = 0  # first step where clean accuracy reached `stop_acc` (or the last step)

    @property
    def label(self) -> int:
        return self.top_label[-1]

    @property
    def collapse(self) -> float:
        return self.top_fraction[-1]

    @property
    def variance(self) -> float:
        return torch.tensor(self.histogram).var(unbiased=False).item()


def set_batchnorm_eval(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


class CleanUnlearning:
    """Adam on -CE(f(x), y) (ascent) until clean accuracy falls to `stop_acc` or `max_steps` is spent."""

    def __init__(self, lr: float = 1e-4, weight_decay: float = 5e-4, max_steps: int = 300, batch_size: int = 64,
                 stop_acc: float = 0.2, bn_eval: bool = True, seed: int = 0):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= stop_acc <= 1:
            raise ValueError(f"stop_acc must be in [0, 1], got {stop_acc}")
        self.lr, self.weight_decay, self.max_steps, self.batch_size = lr, weight_decay, max_steps, batch_size
        self.stop_acc, self.bn_eval, self.seed = stop_acc, bn_eval, seed

    def _record(self, result: UnlearnResult, model: Classifier, clean: Dataset, step: int) -> float:
        predicted = model.predict(clean.x).cpu()
        counts = torch.bincount(predicted, minlength=model.num_classes).float() / len(predicted)
        accuracy = (predicted == clean.y).float().mean().item()
        result.steps.append(step)
        result.clean_acc.append(accuracy)
        result.top_fraction.append(counts.max().item())
        result.top_label.append(int(counts.argmax()))
        result.histogram = counts.tolist()
        return accuracy

    def run(self, classifier: Classifier, clean: Dataset) -> UnlearnResult:
        model = copy.deepcopy(classifier)
        result = UnlearnResult(model=model)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        generator = torch.Generator().manual_seed(self.seed)
        x_all, y_all = clean.x.to(model.device), clean.y.to(model.device)
        self._record(result, model, clean, 0)
        result.stop_step = self.max_steps
        order = torch.randperm(len(clean), generator=generator)
        cursor = 0
        with progress_bar("clean unlearning", total=self.max_steps) as advance:
            for step in range(1, self.max_steps + 1):
                if cursor >= len(order):
                    order, cursor = torch.randperm(len(clean), generator=generator), 0
                index = order[cursor : cursor + self.batch_size].to(model.device)
                cursor += self.batch_size
                model.train()
                if self.bn_eval:
                    set_batchnorm_eval(model)
                loss = -F.cross_entropy(model(x_all[index]), y_all[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                advance()
                if self._record(result, model, clean, step) <= self.stop_acc:
                    result.stop_step = step
                    break
        model.eval()
        return result
