"""MPCViT's MPC-aware attention search (ICCV 2023).

Every head gets alpha (init 1) mixing ReLU-softmax (alpha) and ScaleAttn (1 - alpha); weights and
alphas train together with loss CE + l1 * sum|alpha|, which pushes unimportant heads towards the
cheap ScaleAttn. Then the top mu fraction of heads (by alpha, ranked over the whole model) keep
ReLU-softmax, the rest become ScaleAttn, and the binarised model is retrained (distilled from the
original when a teacher is given).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from mpc.layers import HeadMixAttention, fine_tune
from secsuite.data import Dataset
from secsuite.model import Classifier
from secsuite.training import train_classifier
from secsuite.zoo import Block


@dataclass
class SearchResult:
    classifier: Classifier  # binarised and retrained
    alphas: list[list[float]]  # per block, per head, after the search phase
    head_kinds: list[list[str]]  # per block, per head, after binarisation


def _mixed_attentions(classifier: Classifier) -> list[HeadMixAttention]:
    return [module.attn for module in classifier.modules() if isinstance(module, Block)]


def mpcvit_search(classifier: Classifier, data: Dataset, mu: float = 0.5, search_epochs: int = 5, retrain_epochs: int = 5,
                  l1: float = 1e-5, lr: float = 1e-3, seed: int = 0, teacher: Classifier | None = None) -> SearchResult:
    """Search and binarise a copy of a zoo ViT `classifier`; `mu` is the fraction of heads kept as ReLU-softmax."""
    if not 0 <= mu <= 1:
        raise ValueError(f"mu must be in [0, 1], got {mu}")
    if l1 < 0:
        raise ValueError(f"l1 must be >= 0, got {l1}")
    searched = copy.deepcopy(classifier)
    blocks = [module for module in searched.modules() if isinstance(module, Block)]
    if not blocks:
        raise ValueError(f"model {classifier.name} has no transformer blocks to search")
    for block in blocks:
        block.attn = HeadMixAttention.from_attention(block.attn)
    attentions = _mixed_attentions(searched)

    def loss(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        penalty = sum(attention.alpha.abs().sum() for attention in attentions)
        return F.cross_entropy(model(x), y) + l1 * penalty

    train_classifier(searched, data, epochs=search_epochs, lr=lr, seed=seed, loss_fn=loss, description=f"MPCViT search mu={mu}")
    alphas = torch.cat([attention.alpha.detach() for attention in attentions])
    keep = torch.zeros_like(alphas, dtype=torch.bool)
    keep[torch.argsort(alphas, descending=True, stable=True)[: math.floor(mu * len(alphas) + 0.5)]] = True
    for attention, relu_heads in zip(attentions, keep.split([a.heads for a in attentions])):
        attention.binarise(relu_heads)
    searched.name = f"{classifier.name}-mpcvit-mu{mu:g}"
    if teacher is not None:
        fine_tune(searched, teacher, data, epochs=retrain_epochs, lr=lr, seed=seed + 1)
    else:
        train_classifier(searched, data, epochs=retrain_epochs, lr=lr, seed=seed + 1, description=f"retrain {searched.name}")
    return SearchResult(
        classifier=searched,
        alphas=[attention.alpha.detach().cpu().tolist() for attention in attentions],
        head_kinds=[attention.head_kinds() for attention in attentions],
    )
