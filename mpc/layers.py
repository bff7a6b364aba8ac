"""MPC-friendly variants of trained models, and fine-tuning them by distillation from the original.

Attention variants (softmax, ReLU-softmax, ScaleAttn, MPCFormer 2Quad) and GeLU variants (exact,
Quad, ReLU) come from secsuite.zoo; a conversion keeps every weight and swaps only the
nonlinearities, so fine-tuning starts from the trained model rather than from scratch.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from secsuite.data import Dataset
from secsuite.model import Classifier
from secsuite.training import train_classifier
from secsuite.zoo import ACTIVATIONS, ATTENTIONS, Attention, Block, attention_weights


class HeadMixAttention(Attention):
    """MPCViT attention: per-head alpha mixes ReLU-softmax (alpha) and ScaleAttn (1 - alpha).

    After `binarise`, each head uses exactly one kind, which is what private inference runs.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__(dim, heads, "relu_softmax")
        self.alpha = nn.Parameter(torch.ones(heads))
        self.register_buffer("relu_heads", torch.zeros(0, dtype=torch.bool))

    @classmethod
    def from_attention(cls, attention: Attention) -> "HeadMixAttention":
        mixed = cls(attention.qkv.in_features, attention.heads)
        mixed.qkv.load_state_dict(attention.qkv.state_dict())
        mixed.proj.load_state_dict(attention.proj.state_dict())
        return mixed.to(attention.qkv.weight.device)

    @property
    def binarised(self) -> bool:
        return self.relu_heads.numel() == self.heads

    def binarise(self, relu_heads: torch.Tensor) -> None:
        self.relu_heads = relu_heads.to(dtype=torch.bool, device=self.alpha.device)
        self.alpha.requires_grad_(False)

    def head_kinds(self) -> list[str]:
        if not self.binarised:
            raise ValueError("HeadMixAttention is still mixing both kinds; binarise it before private inference")
        return ["relu_softmax" if relu else "scale" for relu in self.relu_heads.tolist()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        head_dim = dim // self.heads
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
        mix = self.relu_heads.float() if self.binarised else self.alpha
        mix = mix.view(1, -1, 1, 1)
        weights = mix * attention_weights(scores, "relu_softmax") + (1 - mix) * attention_weights(scores, "scale")
        return self.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim))


def to_variant(classifier: Classifier, attention: str | None = None, activation: str | None = None,
               avg_pool: bool = False, name: str | None = None) -> Classifier:
    """A copy of `classifier` with its attention, MLP activation and/or max-pooling swapped; weights kept."""
    if attention is not None and attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    variant = copy.deepcopy(classifier)
    for module in list(variant.modules()):
        if isinstance(module, Block):
            if attention is not None:
                if isinstance(module.attn, HeadMixAttention):
                    raise ValueError("a searched (head-mixed) model cannot be converted to a single attention kind")
                module.attn.kind = attention
            if activation is not None:
                module.mlp[1] = ACTIVATIONS[activation]()
        for child_name, child in list(module.named_children()):
            if avg_pool and isinstance(child, nn.MaxPool2d):
                setattr(module, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    variant.name = name or "-".join([classifier.name] + [part for part in (attention, activation, "avgpool" if avg_pool else None) if part])
    return variant


def distillation_loss(teacher: Classifier, temperature: float = 4.0, weight: float = 0.5):
    """weight * T^2 * KL(teacher || student at temperature T) + (1 - weight) * cross-entropy."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 <= weight <= 1:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    teacher.eval()

    def loss(student: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = student(x)
        with torch.no_grad():
            soft = F.softmax(teacher(x) / temperature, dim=1)
        kl = F.kl_div(F.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean") * temperature**2
        return weight * kl + (1 - weight) * F.cross_entropy(logits, y)

    return loss


def fine_tune(student: Classifier, teacher: Classifier, data: Dataset, epochs: int = 10, lr: float = 1e-3,
              batch_size: int = 64, seed: int = 0, temperature: float = 4.0, weight: float = 0.5) -> list[float]:
    """Fine-tune a converted model with distillation from the original; returns per-epoch losses."""
    return train_classifier(student, data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                            loss_fn=distillation_loss(teacher, temperature, weight), description=f"fine-tune {student.name}")
