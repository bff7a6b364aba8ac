"""Adversarial training: PGD-AT (Madry et al. 2018) and TRADES (Zhang et al. 2019), Linf and L2.

Both share one loop (`AdversarialTraining`): a seeded shuffle per epoch, an eps that ramps up
linearly over `warmup_epochs` (large eps from the first step makes small models collapse onto
one class), Adam, and an optional per-epoch checkpoint in `checkpoint_dir` that a rerun with
the same parameters resumes from. Subclasses only define the per-batch loss.

Training starts from the weights of the classifier given to `fit` (the audit passes its trained
model); pass an untrained classifier to train from scratch.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from attacks.evasion.base import NORMS, check_positive, l2_normalize, project
from attacks.evasion.pgd import PGD
from defenses.base import Defense, DefenseResult
from secsuite.data import Dataset
from secsuite.files import save_torch
from secsuite.model import Classifier
from secsuite.progress import log, progress_bar
from secsuite.threat import ThreatModel


def check_budget(eps: float | None, norm: str | None, threat: ThreatModel, input_shape: tuple[int, ...]) -> tuple[float, str]:
    """Resolve (eps, norm) against the threat model; a norm other than the threat's, or an eps no image pair can reach, is an error."""
    norm = norm or threat.norm
    if norm != threat.norm:
        raise ValueError(f"norm {norm!r} is not the threat model's norm {threat.norm!r}")
    eps = max(threat.eps) if eps is None else float(eps)
    # The largest distance between two images in [0,1]^d: 1 in Linf, sqrt(d) in L2.
    largest = 1.0 if norm == "linf" else math.sqrt(math.prod(input_shape))
    if not 0 < eps <= largest:
        raise ValueError(f"eps must be in (0, {largest:g}] for norm {norm!r}, got {eps}")
    return eps, norm


class AdversarialTraining(Defense):
    """Shared loop; `eps`/`norm` default to the threat model's largest eps and its norm."""

    name = "adversarial_training"

    def __init__(self, eps: float | None = None, norm: str | None = None, epochs: int = 10, lr: float = 1e-3,
                 batch_size: int = 128, steps: int = 10, step_size: float | None = None, warmup_epochs: int = 0,
                 weight_decay: float = 0.0, seed: int = 0, checkpoint_dir: str | None = None):
        if norm is not None and norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if eps is not None:
            check_positive("eps", eps)
        for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("steps", steps, 1), ("warmup_epochs", warmup_epochs, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        check_positive("lr", lr)
        check_positive("weight_decay", weight_decay, allow_zero=True)
        if step_size is not None:
            check_positive("step_size", step_size)
        self.eps, self.norm = (float(eps) if eps is not None else None), norm
        self.epochs, self.lr, self.batch_size, self.steps = int(epochs), float(lr), int(batch_size), int(steps)
        self.step_size, self.warmup_epochs = (float(step_size) if step_size is not None else None), int(warmup_epochs)
        self.weight_decay, self.seed, self.checkpoint_dir = float(weight_decay), int(seed), checkpoint_dir

    def epoch_eps(self, eps: float, epoch: int) -> float:
        if self.warmup_epochs == 0:
            return eps
        return eps * min(1.0, (epoch + 1) / self.warmup_epochs)

    def step_for(self, eps: float) -> float:
        # Scale a user step size with the warm-up ramp so that steps * step_size / eps stays constant.
        full = self.step_size if self.step_size is not None else 2.5 * self.resolved_eps / self.steps
        return full * eps / self.resolved_eps

    def loss(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(training loss, logits on the adversarial batch) for one batch at budget `eps`."""
        raise NotImplementedError

    def _checkpoint_path(self, classifier: Classifier) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        return Path(self.checkpoint_dir) / f"{self.name}-{self._fingerprint(classifier)}.pt"

    def _fingerprint(self, classifier: Classifier) -> str:
        # A checkpoint only resumes the same run: same parameters, resolved budget and starting architecture.
        params = {k: v for k, v in self.params().items() if k != "checkpoint_dir"}
        payload = json.dumps([params, self.resolved_eps, self.resolved_norm, list(classifier.state_dict())], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def fit(self, classifier: Classifier, train_data: Dataset, threat: ThreatModel) -> DefenseResult:
        self.resolved_eps, self.resolved_norm = check_budget(self.eps, self.norm, threat, classifier.input_shape)
        classifier = self.copy_classifier(classifier)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        path = self._checkpoint_path(classifier)
        log_rows: list[dict[str, Any]] = []
        start_epoch, elapsed = 0, 0.0
        if path is not None and path.is_file():
            state = torch.load(path, map_location=classifier.device, weights_only=True)
            classifier.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            log_rows, start_epoch, elapsed = json.loads(state["log"]), int(state["epoch"]) + 1, float(state["elapsed"])
            log(f"{self.name}: resuming from {path} after epoch {start_epoch}")
        device = classifier.device
        x_all, y_all = train_data.x.to(device), train_data.y.to(device)
        with progress_bar(self.name, total=self.epochs - start_epoch) as advance:
            for epoch in range(start_epoch, self.epochs):
                tick = time.perf_counter()
                eps = self.epoch_eps(self.resolved_eps, epoch)
                # Seeding each epoch on its own makes a resumed run identical to an uninterrupted one.
                order = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch)).to(device)
                total_loss, correct = 0.0, 0
                for batch, begin in enumerate(range(0, len(train_data), self.batch_size)):
                    index = order[begin : begin + self.batch_size]
                    x, y = x_all[index], y_all[index]
                    classifier.train()
                    loss, logits = self.loss(classifier, x, y, eps, seed=self.seed + 7919 * (epoch * 100_000 + batch))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total_loss += loss.item() * len(index)
                    correct += (logits.argmax(1) == y).sum().item()
                elapsed += time.perf_counter() - tick
                log_rows.append({"epoch": epoch + 1, "eps": eps, "loss": total_loss / len(train_data),
                                 "train_adv_acc": correct / len(train_data), "time_s": elapsed})
                if path is not None:
                    save_torch(path, {"model": classifier.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                                      "elapsed": elapsed, "log": json.dumps(log_rows)})
                advance()
        classifier.eval()
        classifier.reset_counters()
        return DefenseResult(classifier=classifier, log=log_rows, training_time_s=elapsed, epochs=self.epochs,
                             details={"eps": self.resolved_eps, "norm": self.resolved_norm, "resumed_from_epoch": start_epoch})


class PGDAT(AdversarialTraining):
    """Madry et al.: minimise the cross-entropy on PGD examples (random start, `steps` steps)."""

    name = "pgd_at"

    def loss(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        attack = PGD(eps=eps, norm=self.resolved_norm, steps=self.steps, step_size=self.step_for(eps), seed=seed)
        x_adv = attack.attack(classifier, x, y).x_adv
        logits = classifier(x_adv)
        return F.cross_entropy(logits, y), logits


class TRADES(AdversarialTraining):
    """Zhang et al.: CE(f(x), y) + beta * KL(f(x) || f(x')), x' maximising the KL from x + 0.001 * N(0, 1)."""

    name = "trades"

    def __init__(self, beta: float = 6.0, **params):
        super().__init__(**params)
        check_positive("beta", beta, allow_zero=True)
        self.beta = float(beta)

    def _maximise_kl(self, classifier: Classifier, x: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        # Generated in eval mode as in the official code, so BatchNorm statistics see only the training forward.
        was_training = classifier.training
        classifier.eval()
        try:
            with torch.no_grad():
                p_clean = F.softmax(classifier(x), dim=1)
            generator = torch.Generator().manual_seed(seed)
            x_adv = (x + 0.001 * torch.randn(x.shape, generator=generator).to(x.device)).clamp(0, 1)
            step = self.step_for(eps)
            for _ in range(self.steps):
                x_adv = x_adv.detach().requires_grad_(True)
                kl = F.kl_div(F.log_softmax(classifier(x_adv), dim=1), p_clean, reduction="sum")
                (grad,) = torch.autograd.grad(kl, x_adv)
                direction = grad.sign() if self.resolved_norm == "linf" else l2_normalize(grad)
                x_adv = project(x_adv.detach() + step * direction, x, eps, self.resolved_norm)
        finally:
            classifier.train(was_training)
        return x_adv.detach()

    def loss(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self._maximise_kl(classifier, x, eps, seed)
        logits = classifier(x)
        logits_adv = classifier(x_adv)
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return F.cross_entropy(logits, y) + self.beta * robust, logits_adv
