"""A black-box view of a victim model: it answers only what the threat model allows and
charges every image it answers against a hard query budget."""

from __future__ import annotations

import torch

from attacks.evasion.base import check_positive_int
from secsuite.errors import SecsuiteError
from secsuite.model import Classifier

OUTPUTS = ("probabilities", "top-k", "label")


class BudgetExceeded(SecsuiteError):
    """A query would take the attacker past the query budget; nothing of it was answered."""


class UnsupportedOutput(SecsuiteError):
    """An extraction method needs more from the victim than the threat model lets it answer."""


class BlackBoxVictim:
    """Wraps a Classifier as an API: `query(x)` returns probabilities, top-k probabilities
    (the rest zeroed) or labels only, and refuses a batch that would exceed `budget` images.

    Answers are computed in eval mode without gradients; the attacker never sees logits.
    """

    def __init__(self, classifier: Classifier, budget: int, output: str = "probabilities", top_k: int = 1):
        check_positive_int("budget", budget)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if int(top_k) != top_k or not 1 <= top_k <= classifier.num_classes:
            raise ValueError(f"top_k must be an integer in [1, {classifier.num_classes}], got {top_k}")
        self._classifier = classifier
        self.budget, self.output, self.top_k = int(budget), output, int(top_k)
        self.num_classes = classifier.num_classes
        self.input_shape = classifier.input_shape
        self.device = classifier.device
        self.spent = 0

    @property
    def remaining(self) -> int:
        return self.budget - self.spent

    @torch.no_grad()
    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Answer a batch in [0,1]: (N, K) probabilities for probabilities/top-k, (N,) labels for label."""
        if x.shape[0] > self.remaining:
            raise BudgetExceeded(f"query of {x.shape[0]} images refused: {self.spent} of {self.budget} queries already spent")
        self._classifier.check_inputs(x)
        was_training = self._classifier.training
        self._classifier.eval()
        try:
            logits = self._classifier(x.to(self.device))
        finally:
            self._classifier.train(was_training)
        self.spent += x.shape[0]
        if self.output == "label":
            return logits.argmax(1)
        probs = logits.softmax(1)
        if self.output == "top-k":
            values, index = probs.topk(self.top_k, dim=1)
            probs = torch.zeros_like(probs).scatter_(1, index, values)
        return probs

    def require(self, method: str, outputs: tuple[str, ...]) -> None:
        """Refuse a method that cannot work with what this victim answers."""
        if self.output not in outputs:
            raise UnsupportedOutput(f"{method} needs victim outputs in {list(outputs)}, but the victim answers {self.output!r} only")
