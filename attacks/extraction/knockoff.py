"""Knockoff-style extraction (Orekondy et al., CVPR 2019), random strategy: query the victim on
images from a surrogate pool the attacker holds and train the clone on the answers.

Works with every victim output: probabilities and top-k as soft targets, labels as hard ones.
"""

from __future__ import annotations

import torch

from attacks.extraction.base import Extraction, as_distribution, check_positive_int, soft_cross_entropy
from attacks.extraction.victim import BlackBoxVictim
from secsuite.data import Dataset
from secsuite.model import Classifier
from secsuite.progress import progress_bar


class Knockoff(Extraction):
    name = "knockoff"

    def __init__(self, pool: Dataset, epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
                 seed: int = 0, checkpoints: int = 5):
        super().__init__(seed, checkpoints)
        if len(pool) == 0:
            raise ValueError("pool must hold at least one image")
        self.pool = pool
        self.epochs = check_positive_int("epochs", epochs)
        self.batch_size = check_positive_int("batch_size", batch_size)
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.lr = float(lr)

    def params(self) -> dict:
        return {"pool_size": len(self.pool), "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "seed": self.seed, "checkpoints": self.checkpoints}

    def _run(self, victim: BlackBoxVictim, clone: Classifier) -> None:
        noise = torch.Generator().manual_seed(self.seed)
        n = min(len(self.pool), victim.remaining)
        order = torch.randperm(len(self.pool), generator=noise)[:n]
        optimizer = torch.optim.Adam(clone.parameters(), lr=self.lr)
        xs, targets = [], []
        stages = torch.linspace(0, n, self.checkpoints + 1).round().long().tolist()
        # Query in stages and keep training on everything answered so far, so that the curve
        # shows clone quality against queries spent.
        with progress_bar("knockoff", total=self.checkpoints) as advance:
            for lo, hi in zip(stages[:-1], stages[1:]):
                x = self.pool.x[order[lo:hi]].to(victim.device)
                if len(x):
                    xs.append(x)
                    targets.append(as_distribution(victim.query(x), victim.num_classes))
                x_all, t_all = torch.cat(xs), torch.cat(targets)
                clone.train()
                for _ in range(self.epochs):
                    perm = torch.randperm(len(x_all), generator=noise).to(x_all.device)
                    for start in range(0, len(x_all), self.batch_size):
                        index = perm[start : start + self.batch_size]
                        loss = soft_cross_entropy(clone(x_all[index]), t_all[index])
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                advance()
                self._checkpoint(victim, clone, force=True)
