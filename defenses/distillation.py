"""Defensive distillation (Papernot et al. 2016), as in Carlini and Wagner's replication.

A teacher (the input architecture, freshly initialised) is trained on softmax(z/T); its soft
labels at T train a student of the same architecture, also at T; the student is deployed at
T=1. Its logits end up about T times larger than needed, softmax saturates and the
cross-entropy input gradient underflows to exactly zero: FGSM/PGD see no gradient (masking),
while margin-based attacks such as Carlini-Wagner are unaffected.

`evaluate_temperature=True` deploys logits/T instead (the attacker who knows T), by dividing
the final linear layer's weight and bias by T, which keeps the architecture and state_dict
keys unchanged so the saved model re-audits like any other.

Default lr 1e-2 (Adam): at T=100 the logits must grow about 100x to fit the labels; with 1e-3
the teacher on digits stopped at 89% train accuracy after 15 epochs, with 1e-2 it reached 99.5%.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.nn import functional as F

from attacks.evasion.base import check_positive
from defenses.base import Defense, DefenseResult
from secsuite.data import Dataset
from secsuite.errors import ModelError
from secsuite.model import Classifier
from secsuite.threat import ThreatModel
from secsuite.training import train_classifier


def reinitialise(classifier: Classifier, seed: int) -> Classifier:
    """A copy with every layer's parameters freshly drawn (seeded), buffers such as BN statistics reset."""
    fresh = Defense.copy_classifier(classifier)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.net.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    return fresh


def fold_temperature(classifier: Classifier, temperature: float) -> None:
    """Divide the output logits by T in place by scaling the last linear layer; checked, not assumed."""
    linears = [m for m in classifier.net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError("evaluate_temperature needs a final nn.Linear layer to fold 1/T into; the model has none")
    probe = torch.rand(4, *classifier.input_shape, generator=torch.Generator().manual_seed(0)).to(classifier.device)
    classifier.eval()
    with torch.no_grad():
        before = classifier(probe)
        last = linears[-1]
        last.weight.div_(temperature)
        if last.bias is not None:
            last.bias.div_(temperature)
        after = classifier(probe)
    classifier.reset_counters()
    if not torch.allclose(after * temperature, before, rtol=1e-3, atol=1e-4 * float(before.abs().max())):
        raise ModelError("evaluate_temperature: the last nn.Linear layer is not the model's output layer, so logits/T cannot be folded in")


def soft_label_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean cross-entropy of the student's softmax(z/T) against the teacher's soft labels softmax(t/T)."""
    soft = F.softmax(teacher_logits / temperature, dim=1)
    return -(soft * F.log_softmax(student_logits / temperature, dim=1)).sum(1).mean()


class DefensiveDistillation(Defense):
    name = "distillation"

    def __init__(self, temperature: float = 100.0, epochs: int = 20, teacher_epochs: int | None = None, lr: float = 1e-2,
                 batch_size: int = 64, seed: int = 0, evaluate_temperature: bool = False):
        check_positive("temperature", temperature)
        for name, value in (("epochs", epochs), ("teacher_epochs", epochs if teacher_epochs is None else teacher_epochs), ("batch_size", batch_size)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        check_positive("lr", lr)
        self.temperature, self.epochs = float(temperature), int(epochs)
        self.teacher_epochs = int(teacher_epochs) if teacher_epochs is not None else self.epochs
        self.lr, self.batch_size, self.seed = float(lr), int(batch_size), int(seed)
        self.evaluate_temperature = bool(evaluate_temperature)

    def fit(self, classifier: Classifier, train_data: Dataset, threat: ThreatModel) -> DefenseResult:
        start = time.perf_counter()
        T = self.temperature
        teacher = reinitialise(classifier, self.seed)
        teacher_losses = train_classifier(
            teacher, train_data, epochs=self.teacher_epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
            loss_fn=lambda model, x, y: F.cross_entropy(model(x) / T, y), description=f"distillation teacher (T={T:g})")
        teacher.eval()

        def soft_label_loss(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            # The teacher is fixed and in eval mode, so its soft labels are the same every epoch.
            with torch.no_grad():
                teacher_logits = teacher(x)
            return soft_label_cross_entropy(model(x), teacher_logits, T)

        student = reinitialise(classifier, self.seed + 1)
        student_losses = train_classifier(
            student, train_data, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed + 1,
            loss_fn=soft_label_loss, description=f"distillation student (T={T:g})")
        if self.evaluate_temperature:
            fold_temperature(student, T)
        with torch.no_grad():
            logits = student(train_data.x[:512].to(student.device))
        student.reset_counters()
        log_rows = [{"stage": "teacher", "epoch": i + 1, "loss": loss} for i, loss in enumerate(teacher_losses)]
        log_rows += [{"stage": "student", "epoch": i + 1, "loss": loss} for i, loss in enumerate(student_losses)]
        details = {
            "temperature": T, "deployed_temperature": T if self.evaluate_temperature else 1.0,
            "teacher_train_acc": teacher.accuracy(train_data.x, train_data.y),
            "student_train_acc": student.accuracy(train_data.x, train_data.y),
            # Large deployed logits are what saturate the softmax at T=1.
            "mean_max_logit": float(logits.max(1).values.mean()),
        }
        details["markdown"] = (
            f"Teacher and student trained at T={T:g}, deployed at T={details['deployed_temperature']:g}; "
            f"train accuracy teacher {100 * details['teacher_train_acc']:.1f}%, student {100 * details['student_train_acc']:.1f}%; "
            f"mean largest deployed logit {details['mean_max_logit']:.1f}.")
        return DefenseResult(classifier=student, log=log_rows, training_time_s=time.perf_counter() - start,
                             epochs=self.teacher_epochs + self.epochs, details=details)
