"""Certified training (IBP, Gowal 2018; CROWN-IBP, Zhang 2020) as a Defense.

Loss = kappa * CE(clean) + (1 - kappa) * CE(-[0, lb]) where lb are lower bounds of the margins f_y - f_j over the
eps ball. For CROWN-IBP, lb = beta * lb_CROWN-IBP + (1 - beta) * lb_IBP with beta = (eps_max - eps) / eps_max:
the tighter CROWN-IBP bounds help while eps is small, plain IBP takes over at the end. eps follows the smoothed
ramp and trains at `eps_scale` (1.1) times the test eps so that the test eps is certified with some slack.
"""

from __future__ import annotations

import time

import torch
from torch.nn import functional as F

from defenses.base import Defense, DefenseResult
from defenses.certified.certify import Certifier, margin_spec, perturbation
from defenses.certified.compat import lirpa
from defenses.certified.schedule import smoothed_eps
from secsuite.data import Dataset
from secsuite.model import Classifier
from secsuite.progress import progress_bar
from secsuite.threat import ThreatModel

TRAIN_METHODS = ("IBP", "CROWN-IBP")


def robust_cross_entropy(margin_lower: torch.Tensor) -> torch.Tensor:
    """CE on the worst-case logits implied by the margin bounds: true class at 0, class j at -lb_j."""
    padded = torch.cat([torch.zeros_like(margin_lower[:, :1]), -margin_lower], dim=1)
    return F.cross_entropy(padded, torch.zeros(len(padded), dtype=torch.long, device=padded.device))


class CertifiedTraining(Defense):
    name = "certified_training"

    def __init__(self, method: str = "CROWN-IBP", eps: float | None = None, eps_scale: float = 1.1, epochs: int = 30,
                 warmup_epochs: int = 1, ramp_epochs: int = 15, lr: float = 5e-4, lr_decay_epochs: list[int] | None = None,
                 lr_decay: float = 0.2, batch_size: int = 128, kappa_start: float = 1.0, kappa_end: float = 0.0,
                 grad_clip: float = 10.0, seed: int | None = None):
        if method not in TRAIN_METHODS:
            raise ValueError(f"method must be one of {TRAIN_METHODS}, got {method!r}")
        if eps is not None and not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if not eps_scale >= 1:
            raise ValueError(f"eps_scale must be >= 1, got {eps_scale}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if warmup_epochs < 0 or ramp_epochs < 0 or warmup_epochs + ramp_epochs > epochs:
            raise ValueError(f"warmup_epochs + ramp_epochs must be within epochs ({epochs}), got {warmup_epochs} + {ramp_epochs}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 < lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for field, value in (("kappa_start", kappa_start), ("kappa_end", kappa_end)):
            if not 0 <= value <= 1:
                raise ValueError(f"{field} must be in [0, 1], got {value}")
        if not grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0, got {grad_clip}")
        self.method, self.eps, self.eps_scale, self.epochs = method, eps, eps_scale, epochs
        self.warmup_epochs, self.ramp_epochs, self.lr, self.lr_decay, self.batch_size = warmup_epochs, ramp_epochs, lr, lr_decay, batch_size
        # Decay late, once eps has reached its maximum: the default is at 70% and 90% of training.
        self.lr_decay_epochs = list(lr_decay_epochs) if lr_decay_epochs is not None else [int(0.7 * epochs), int(0.9 * epochs)]
        self.kappa_start, self.kappa_end, self.grad_clip, self.seed = kappa_start, kappa_end, grad_clip, seed

    def target_eps(self, threat: ThreatModel) -> float:
        eps = self.eps if self.eps is not None else max(threat.eps)
        if not eps > 0:
            raise ValueError("certified training needs eps > 0: set eps or a positive eps in the threat model")
        return eps

    def fit(self, classifier: Classifier, train_data: Dataset, threat: ThreatModel) -> DefenseResult:
        classifier = self.copy_classifier(classifier)
        classifier.check_inputs(train_data.x[:1], train_data.y[:1])
        seed = self.seed if self.seed is not None else threat.seed
        torch.manual_seed(seed)
        eps_max = self.eps_scale * self.target_eps(threat)
        certifier = Certifier(classifier, batch_size=self.batch_size)
        bounded = certifier.bounded
        # BoundedModule's parameters share storage with classifier.net, so stepping them trains the classifier.
        parameters = [p for p in bounded.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=self.lr)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, self.lr_decay_epochs, gamma=self.lr_decay)
        device = classifier.device
        x_all, y_all = train_data.x.to(device), train_data.y.to(device)
        generator = torch.Generator().manual_seed(seed)
        steps_per_epoch = -(-len(train_data) // self.batch_size)
        log: list[dict] = []
        started = time.perf_counter()
        bounded.train()
        with progress_bar(f"certified training ({self.method})", total=self.epochs) as advance:
            for epoch in range(self.epochs):
                order = torch.randperm(len(train_data), generator=generator).to(device)
                totals = {"loss": 0.0, "clean_acc": 0.0, "verified_acc": 0.0}
                for batch_index, start in enumerate(range(0, len(train_data), self.batch_size)):
                    step = epoch * steps_per_epoch + batch_index
                    eps = smoothed_eps(step, self.warmup_epochs * steps_per_epoch, self.ramp_epochs * steps_per_epoch, eps_max)
                    index = order[start : start + self.batch_size]
                    loss, clean_acc, verified_acc = self.loss(certifier, x_all[index], y_all[index], eps, eps_max, threat.norm)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip)
                    optimizer.step()
                    for key, value in (("loss", loss.item()), ("clean_acc", clean_acc), ("verified_acc", verified_acc)):
                        totals[key] += value * len(index)
                scheduler.step()
                log.append({"epoch": epoch + 1, "eps": eps, "lr": optimizer.param_groups[0]["lr"],
                            **{key: value / len(train_data) for key, value in totals.items()}})
                advance()
        classifier.eval()
        classifier.reset_counters()
        return DefenseResult(classifier=classifier, log=log, training_time_s=time.perf_counter() - started, epochs=self.epochs,
                             details={"method": self.method, "train_eps": eps_max, "norm": threat.norm,
                                      "markdown": self.summary(log[-1], eps_max, threat.norm)})

    def summary(self, last: dict, eps_max: float, norm: str) -> str:
        # Training-set figures only: fit never sees test data; certify the saved model in an audit for test numbers.
        return (f"{self.method} certified training to {norm} eps {eps_max:g} ({self.eps_scale:g} x the test eps). Last epoch, "
                f"on training batches: clean accuracy {100 * last['clean_acc']:.1f}%, verified {100 * last['verified_acc']:.1f}% "
                f"(bounds used for training).")

    def loss(self, certifier: Certifier, x: torch.Tensor, y: torch.Tensor, eps: float, eps_max: float, norm: str):
        """(loss, clean accuracy, verified accuracy on the batch at the current eps)."""
        bounded = certifier.bounded
        logits = bounded(x)
        clean = F.cross_entropy(logits, y)
        clean_acc = (logits.argmax(1) == y).float().mean().item()
        if eps == 0:
            return clean, clean_acc, 0.0
        bounded_x = lirpa().BoundedTensor(x, perturbation(x, eps, norm))
        C = margin_spec(y, certifier.classifier.num_classes)
        lower, _ = bounded.compute_bounds(x=(bounded_x,), C=C, method="IBP", bound_upper=False)
        beta = (eps_max - eps) / eps_max if self.method == "CROWN-IBP" else 0.0
        if beta > 0:
            crown_ibp, _ = bounded.compute_bounds(x=(bounded_x,), C=C, method="CROWN-IBP", bound_upper=False)
            lower = beta * crown_ibp + (1 - beta) * lower
        kappa = self.kappa_start + (self.kappa_end - self.kappa_start) * eps / eps_max
        loss = kappa * clean + (1 - kappa) * robust_cross_entropy(lower)
        return loss, clean_acc, (lower > 0).all(1).float().mean().item()
