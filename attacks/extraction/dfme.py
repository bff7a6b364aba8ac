"""DFME: data-free model extraction (Truong et al., CVPR 2021).

A generator proposes queries that maximise the student-victim disagreement (L1 on logits); the
student minimises it. The victim is a black box, so the generator's gradient through the victim
is estimated by forward differences on the pre-tanh image. Needs probabilities (pseudo-logits).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from attacks.extraction.base import Extraction, check_positive_int
from attacks.extraction.generator import Generator
from attacks.extraction.victim import BlackBoxVictim
from secsuite.model import Classifier
from secsuite.progress import progress_bar


def pseudo_logits(probs: torch.Tensor) -> torch.Tensor:
    """DFME's logit recovery: log-probabilities minus their mean (the softmax is shift-invariant)."""
    log_probs = probs.clamp_min(1e-8).log()
    return log_probs - log_probs.mean(1, keepdim=True)


class DFME(Extraction):
    name = "dfme"
    outputs = ("probabilities",)

    def __init__(self, batch_size: int = 64, student_steps: int = 5, directions: int = 1, grad_eps: float = 1e-3,
                 student_lr: float = 0.1, generator_lr: float = 1e-4, nz: int = 100, seed: int = 0, checkpoints: int = 5):
        super().__init__(seed, checkpoints)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.student_steps = check_positive_int("student_steps", student_steps)
        self.directions = check_positive_int("directions", directions)
        for name, value in (("grad_eps", grad_eps), ("student_lr", student_lr), ("generator_lr", generator_lr)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.grad_eps, self.student_lr, self.generator_lr = float(grad_eps), float(student_lr), float(generator_lr)
        self.nz = check_positive_int("nz", nz)

    def _student_loss(self, clone: Classifier, x: torch.Tensor, answers: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        loss = F.l1_loss(clone(x), pseudo_logits(answers), reduction="none").mean(1)
        return loss.mean() if reduction == "mean" else loss

    def _generator_step(self, victim: BlackBoxVictim, clone: Classifier, gen: Generator, optimizer, noise: torch.Generator) -> None:
        batch, m = self.batch_size, self.directions
        pre = gen(gen.noise(batch, noise))
        with torch.no_grad():
            base = pre.detach()
            u = torch.randn((batch, m, *base.shape[1:]), generator=noise).to(base.device)
            u = u / u.flatten(2).norm(dim=2).view(batch, m, *[1] * (base.dim() - 1))
            points = torch.cat([base.unsqueeze(1), base.unsqueeze(1) + self.grad_eps * u], 1).flatten(0, 1)
            images = Generator.to_image(points)
            clone.eval()
            loss = self._student_loss(clone, images, victim.query(images), reduction="none").view(batch, m + 1)
            clone.train()
            dim = base[0].numel()
            # Forward-difference estimate of d loss / d pre-tanh image, averaged over m unit directions.
            slopes = (loss[:, 1:] - loss[:, :1]) / self.grad_eps
            grad = dim / m * (slopes.view(batch, m, *[1] * (base.dim() - 1)) * u).sum(1)
        optimizer.zero_grad(set_to_none=True)
        # The generator maximises the disagreement: descend on its negation.
        pre.backward(-grad / batch)
        optimizer.step()

    def _run(self, victim: BlackBoxVictim, clone: Classifier) -> None:
        gen = Generator(victim.input_shape, self.nz).to(clone.device)
        noise = torch.Generator().manual_seed(self.seed)
        opt_g = torch.optim.Adam(gen.parameters(), lr=self.generator_lr)
        opt_s = torch.optim.SGD(clone.parameters(), lr=self.student_lr, momentum=0.9, weight_decay=5e-4)
        per_iteration = self.batch_size * (self.directions + 1 + self.student_steps)
        # As in the DFME code, the generator stays in train mode (batch statistics) throughout.
        gen.train()
        clone.train()
        with progress_bar("dfme", total=victim.remaining) as advance:
            while victim.remaining > 0:
                spent = victim.spent
                if victim.remaining >= per_iteration:
                    self._generator_step(victim, clone, gen, opt_g, noise)
                for _ in range(self.student_steps):
                    n = min(self.batch_size, victim.remaining)
                    if n == 0:
                        break
                    with torch.no_grad():
                        x = gen.images(gen.noise(n, noise))
                        answers = victim.query(x)
                    loss = self._student_loss(clone, x, answers)
                    opt_s.zero_grad(set_to_none=True)
                    loss.backward()
                    opt_s.step()
                advance(victim.spent - spent)
                self._checkpoint(victim, clone)
