"""CaBaGe: data-free extraction with a class-balanced generator ensemble (Rosenthal et al., 2024).

What follows the paper's description: an ensemble of generators; queries chosen by a
class-balanced selection that keeps hard samples; experience replay that focuses on difficult
samples; the number of classes learned on the fly from the victim's answers; only victim
answers are charged as queries (generators train against the clones, for free).

Our reading (details the description leaves open; see docs/privacy.md):
- Generator objective (from DisGUIDE): maximise the disagreement (L1 between softmaxes) of two
  clones, minus `balance_weight` x the batch class-balance term (KL of the clones' mean
  prediction from uniform over the classes discovered so far).
- Hardness = that clone disagreement. Selection: each generator proposes `oversample` x its
  share of a batch; candidates are grouped by the clones' predicted class and taken round-robin,
  least-answered classes first, hardest first within a class.
- Replay: each clone step trains on the newest batch plus replayed samples, half drawn
  uniformly from the buffer and half the highest-loss samples of a uniform draw.
- Discovered classes = labels the victim has returned; the balance term covers only those.
Works with probabilities, top-k (renormalised) and label-only victims.
"""

from __future__ import annotations

import copy

import torch
from torch.nn import functional as F

from attacks.extraction.base import Extraction, as_distribution, check_positive_int, soft_cross_entropy
from attacks.extraction.generator import Generator
from attacks.extraction.victim import BlackBoxVictim
from secsuite.model import Classifier
from secsuite.progress import progress_bar


def _reinitialised(model: Classifier, seed: int) -> Classifier:
    """A copy of `model` with freshly drawn weights (the second clone must start elsewhere to disagree)."""
    twin = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in twin.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return twin


class CaBaGe(Extraction):
    name = "cabage"

    def __init__(self, batch_size: int = 64, generators: int = 3, oversample: int = 4, clone_steps: int = 5,
                 replay_batch: int = 128, balance_weight: float = 0.2, clone_lr: float = 1e-3, generator_lr: float = 1e-3,
                 nz: int = 100, seed: int = 0, checkpoints: int = 5):
        super().__init__(seed, checkpoints)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.generators = check_positive_int("generators", generators)
        self.oversample = check_positive_int("oversample", oversample)
        self.clone_steps = check_positive_int("clone_steps", clone_steps)
        self.replay_batch = check_positive_int("replay_batch", replay_batch)
        self.nz = check_positive_int("nz", nz)
        if not balance_weight >= 0:
            raise ValueError(f"balance_weight must be >= 0, got {balance_weight}")
        for name, value in (("clone_lr", clone_lr), ("generator_lr", generator_lr)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.balance_weight, self.clone_lr, self.generator_lr = float(balance_weight), float(clone_lr), float(generator_lr)

    @staticmethod
    def _disagreement(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return (p - q).abs().sum(1)

    def _generator_step(self, gen: Generator, optimizer, clones: list[Classifier], discovered: torch.Tensor, noise: torch.Generator) -> None:
        x = gen.images(gen.noise(self.batch_size, noise))
        p, q = (F.softmax(c(x), 1) for c in clones)
        loss = -self._disagreement(p, q).mean()
        if self.balance_weight > 0 and discovered.sum() > 1:
            mean = ((p + q) / 2).mean(0)[discovered]
            mean = mean / mean.sum()
            # KL(mean || uniform over discovered classes): zero when the batch is balanced.
            loss = loss + self.balance_weight * (mean * (mean.clamp_min(1e-12).log() + discovered.sum().float().log())).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def _select(self, gens: list[Generator], clones: list[Classifier], counts: torch.Tensor, n: int, noise: torch.Generator) -> torch.Tensor:
        """Class-balanced choice of n hard candidates from all generators."""
        share = -(-self.oversample * n // len(gens))
        x = torch.cat([g.images(g.noise(share, noise)) for g in gens])
        p, q = (F.softmax(c(x), 1) for c in clones)
        hardness = self._disagreement(p, q)
        predicted = (p + q).argmax(1)
        # Rank inside each class by hardness, then interleave classes, least answered first.
        order = hardness.argsort(descending=True)
        rank_in_class = torch.empty_like(order)
        for c in predicted.unique():
            members = order[predicted[order] == c]
            rank_in_class[members] = torch.arange(len(members), device=members.device)
        class_priority = counts.argsort().argsort().to(predicted.device)[predicted]
        key = rank_in_class * (len(counts) + 1) + class_priority
        return x[key.argsort()[:n]]

    def _clone_step(self, clone: Classifier, optimizer, fresh_x, fresh_t, buffer_x, buffer_t, noise: torch.Generator) -> None:
        half = self.replay_batch // 2
        uniform = torch.randint(len(buffer_x), (half,), generator=noise)
        pool = torch.randint(len(buffer_x), (2 * half,), generator=noise)
        with torch.no_grad():
            clone.eval()
            losses = soft_cross_entropy(clone(buffer_x[pool]), buffer_t[pool], reduction="none")
            clone.train()
        hard = pool[losses.argsort(descending=True)[:half]]
        index = torch.cat([uniform, hard]).to(buffer_x.device)
        x = torch.cat([fresh_x, buffer_x[index]])
        t = torch.cat([fresh_t, buffer_t[index]])
        loss = soft_cross_entropy(clone(x), t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def _run(self, victim: BlackBoxVictim, clone: Classifier) -> None:
        device = clone.device
        noise = torch.Generator().manual_seed(self.seed)
        gens = [Generator(victim.input_shape, self.nz).to(device) for _ in range(self.generators)]
        gen_opts = [torch.optim.Adam(g.parameters(), lr=self.generator_lr) for g in gens]
        clones = [clone, _reinitialised(clone, self.seed + 1)]
        clone_opts = [torch.optim.Adam(c.parameters(), lr=self.clone_lr) for c in clones]
        counts = torch.zeros(victim.num_classes, dtype=torch.long)
        buffer_x = torch.empty(0, *victim.input_shape, device=device)
        buffer_t = torch.empty(0, victim.num_classes, device=device)
        for g in gens:
            g.train()
        with progress_bar("cabage", total=victim.remaining) as advance:
            while victim.remaining > 0:
                for c in clones:
                    c.eval()
                for g, opt in zip(gens, gen_opts):
                    self._generator_step(g, opt, clones, counts > 0, noise)
                n = min(self.batch_size, victim.remaining)
                x = self._select(gens, clones, counts, n, noise)
                t = as_distribution(victim.query(x), victim.num_classes)
                counts += torch.bincount(t.argmax(1).cpu(), minlength=victim.num_classes)
                buffer_x, buffer_t = torch.cat([buffer_x, x]), torch.cat([buffer_t, t])
                for c, opt in zip(clones, clone_opts):
                    c.train()
                    for _ in range(self.clone_steps):
                        self._clone_step(c, opt, x, t, buffer_x, buffer_t, noise)
                advance(n)
                self._checkpoint(victim, clone)
