"""RiFT: robust critical fine-tuning (Zhu et al., ICCV 2023).

1. Module robust criticality, per conv/linear weight θᵢ of an adversarially trained model:
   MRC(θᵢ) = max_{‖Δθᵢ‖ ≤ budget·‖θᵢ‖} L_adv(θ+Δθᵢ) − L_adv(θ), on a fixed set of PGD examples
   made once with the unperturbed model; `ascent_epochs` epochs of gradient ascent (SGD,
   `ascent_lr`) on that weight alone, projected back onto the ball once per epoch, keeping the
   largest loss seen.
2. Fine-tune the parameters of the lowest-MRC module on clean data (SGD, momentum 0.9,
   weight decay 5e-4, lr ×0.1 halfway); train mode also updates every BatchNorm statistic.
3. Interpolate θ(α) = α·θ_ft + (1−α)·θ_AT for each α in `alphas`, measure clean and PGD-10
   accuracy on a validation split held out of the training data (the test split is never seen
   by a defense), and pick the α with the best clean accuracy whose robust accuracy is at most
   `tolerance` percentage points below α=0's. α=0 always qualifies, so the rule can fall back
   to the adversarially trained model.

Starting model: with `adversarial_training` (a sub-config such as
{name = "pgd_at", epochs = 5}), that defense is fitted first inside `fit`; without it the input
classifier is assumed to be adversarially trained already.
"""

from __future__ import annotations

import html
import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from attacks.evasion.base import NORMS, check_positive
from attacks.evasion.pgd import PGD
from defenses.adversarial_training import check_budget
from defenses.base import Defense, DefenseResult
from secsuite.data import Dataset
from secsuite.model import Classifier
from secsuite.plots import line_plot
from secsuite.progress import log, progress_bar
from secsuite.threat import ThreatModel
from secsuite.training import shuffled_batches

CRITICAL_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def critical_modules(classifier: Classifier) -> list[tuple[str, nn.Module]]:
    modules = [(name, m) for name, m in classifier.net.named_modules() if isinstance(m, CRITICAL_TYPES)]
    if not modules:
        raise ValueError(f"model {classifier.name!r} has no conv/linear modules for RiFT to rank")
    return modules


def split(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(fraction * len(data))))
    pick = lambda index: Dataset(data.x[index], data.y[index], data.num_classes, data.name)  # noqa: E731
    return pick(order[n_val:]), pick(order[:n_val])


class RiFT(Defense):
    name = "rift"

    def __init__(self, adversarial_training: dict[str, Any] | None = None, eps: float | None = None, norm: str | None = None,
                 budget: float = 0.1, ascent_epochs: int = 10, ascent_lr: float = 1.0, mrc_examples: int = 512,
                 finetune_epochs: int = 10, finetune_lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 5e-4,
                 alphas: list[float] | None = None, tolerance: float = 0.5, eval_steps: int = 10, validation_fraction: float = 0.2,
                 batch_size: int = 128, seed: int = 0):
        if adversarial_training is not None and (not isinstance(adversarial_training, dict) or "name" not in adversarial_training):
            raise ValueError("adversarial_training must be a table with a defense name, e.g. {name = \"pgd_at\", epochs = 5}")
        if norm is not None and norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if eps is not None:
            check_positive("eps", eps)
        for name, value in (("budget", budget), ("ascent_lr", ascent_lr), ("finetune_lr", finetune_lr)):
            check_positive(name, value)
        for name, value in (("momentum", momentum), ("weight_decay", weight_decay), ("tolerance", tolerance)):
            check_positive(name, value, allow_zero=True)
        for name, value in (("ascent_epochs", ascent_epochs), ("mrc_examples", mrc_examples), ("finetune_epochs", finetune_epochs),
                            ("eval_steps", eval_steps), ("batch_size", batch_size)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if not 0 < validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
        alphas = [round(0.1 * i, 10) for i in range(11)] if alphas is None else [float(a) for a in alphas]
        if not alphas or any(not 0 <= a <= 1 for a in alphas):
            raise ValueError(f"alphas must be values in [0, 1], got {alphas}")
        self.adversarial_training = dict(adversarial_training) if adversarial_training is not None else None
        self.eps, self.norm, self.budget, self.ascent_epochs, self.ascent_lr = eps, norm, float(budget), int(ascent_epochs), float(ascent_lr)
        self.mrc_examples, self.finetune_epochs, self.finetune_lr = int(mrc_examples), int(finetune_epochs), float(finetune_lr)
        self.momentum, self.weight_decay, self.tolerance, self.eval_steps = float(momentum), float(weight_decay), float(tolerance), int(eval_steps)
        self.alphas = sorted(set(alphas) | {0.0})
        self.validation_fraction, self.batch_size, self.seed = float(validation_fraction), int(batch_size), int(seed)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "adversarial_training": self.adversarial_training}

    def _pgd(self, steps: int) -> PGD:
        return PGD(eps=self.resolved_eps, norm=self.resolved_norm, steps=steps, seed=self.seed)

    def _batched_loss(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Mean cross-entropy and accuracy, in eval mode, without gradients."""
        total, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(x), self.batch_size):
                logits = classifier(x[start : start + self.batch_size])
                total += F.cross_entropy(logits, y[start : start + self.batch_size], reduction="sum").item()
                correct += (logits.argmax(1) == y[start : start + self.batch_size]).sum().item()
        return total / len(x), correct / len(x)

    def criticality(self, classifier: Classifier, x_adv: torch.Tensor, y: torch.Tensor) -> list[dict[str, Any]]:
        """MRC of every conv/linear weight on the fixed adversarial set (x_adv, y); the model is left unchanged."""
        classifier.eval()
        base_loss, base_acc = self._batched_loss(classifier, x_adv, y)
        rows = []
        modules = critical_modules(classifier)
        with progress_bar("RiFT criticality", total=len(modules)) as advance:
            for name, module in modules:
                weight = module.weight
                original = weight.detach().clone()
                radius = self.budget * original.norm()
                worst_loss, worst_acc = base_loss, base_acc
                for _ in range(self.ascent_epochs):
                    for start in range(0, len(x_adv), self.batch_size):
                        loss = F.cross_entropy(classifier(x_adv[start : start + self.batch_size]), y[start : start + self.batch_size])
                        (grad,) = torch.autograd.grad(loss, weight)
                        with torch.no_grad():
                            weight.add_(self.ascent_lr * grad)
                    with torch.no_grad():
                        delta = weight - original
                        weight.copy_(original + delta * (radius / delta.norm().clamp_min(1e-12)).clamp(max=1.0))
                    loss_value, acc = self._batched_loss(classifier, x_adv, y)
                    if loss_value > worst_loss:
                        worst_loss, worst_acc = loss_value, acc
                with torch.no_grad():
                    weight.copy_(original)
                rows.append({"module": name, "type": type(module).__name__, "parameters": original.numel(),
                             "mrc": worst_loss - base_loss, "robust_acc_worst": worst_acc})
                advance()
        classifier.reset_counters()
        return rows

    def _finetune(self, classifier: Classifier, module: nn.Module, data: Dataset) -> None:
        for parameter in classifier.parameters():
            parameter.requires_grad_(False)
        trainable = list(module.parameters())
        for parameter in trainable:
            parameter.requires_grad_(True)
        optimizer = torch.optim.SGD(trainable, lr=self.finetune_lr, momentum=self.momentum, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[max(1, self.finetune_epochs // 2)], gamma=0.1)
        x_all, y_all = data.x.to(classifier.device), data.y.to(classifier.device)
        generator = torch.Generator().manual_seed(self.seed)
        classifier.train()
        with progress_bar("RiFT fine-tuning", total=self.finetune_epochs) as advance:
            for _ in range(self.finetune_epochs):
                for index in shuffled_batches(len(data), self.batch_size, generator, classifier.device):
                    loss = F.cross_entropy(classifier(x_all[index]), y_all[index])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                schedule.step()
                advance()
        for parameter in classifier.parameters():
            parameter.requires_grad_(True)
        classifier.eval()

    def _sweep(self, start: Classifier, tuned: Classifier, validation: Dataset) -> tuple[list[dict[str, Any]], Classifier]:
        """Evaluate θ(α) for every α; returns the rows and a classifier holding the chosen interpolation."""
        theta_at, theta_ft = start.state_dict(), tuned.state_dict()
        model = self.copy_classifier(start)
        x, y = validation.x.to(model.device), validation.y.to(model.device)
        rows = []
        with progress_bar("RiFT alpha sweep", total=len(self.alphas)) as advance:
            for alpha in self.alphas:
                model.load_state_dict(self._interpolate(theta_at, theta_ft, alpha))
                robust = self._pgd(self.eval_steps).attack(model, x, y).robust.float().mean().item()
                clean_loss, _ = self._batched_loss(model, x, y)
                rows.append({"alpha": alpha, "clean_acc": model.accuracy(x, y), "clean_loss": clean_loss, "robust_acc": robust})
                advance()
        base = rows[0]["robust_acc"]  # alphas are sorted and contain 0
        allowed = [r for r in rows if 100 * (base - r["robust_acc"]) <= self.tolerance + 1e-9]
        # Best clean accuracy; ties go to the smaller alpha (closer to the robust model).
        chosen = max(allowed, key=lambda r: (r["clean_acc"], -r["alpha"]))
        for row in rows:
            row["chosen"] = row is chosen
        model.load_state_dict(self._interpolate(theta_at, theta_ft, chosen["alpha"]))
        model.reset_counters()
        return rows, model

    @staticmethod
    def _interpolate(theta_at: dict, theta_ft: dict, alpha: float) -> dict:
        # Buffers interpolate too: fine-tuning in train mode moved the BatchNorm running statistics.
        return {k: alpha * theta_ft[k] + (1 - alpha) * v if v.is_floating_point() else v for k, v in theta_at.items()}

    def fit(self, classifier: Classifier, train_data: Dataset, threat: ThreatModel) -> DefenseResult:
        started = time.perf_counter()
        critical_modules(classifier)
        self.resolved_eps, self.resolved_norm = check_budget(self.eps, self.norm, threat, classifier.input_shape)
        log_rows: list[dict[str, Any]] = []
        epochs = self.finetune_epochs
        train, validation = split(train_data, self.validation_fraction, self.seed)
        if self.adversarial_training is not None:
            from defenses import make_defense

            at_params = {k: v for k, v in self.adversarial_training.items() if k != "name"}
            at_params.setdefault("eps", self.resolved_eps)
            at_params.setdefault("norm", self.resolved_norm)
            at_result = make_defense(self.adversarial_training["name"], **at_params).fit(classifier, train, threat)
            start = at_result.classifier
            log_rows += [{"stage": "adversarial_training", **row} for row in at_result.log]
            epochs += at_result.epochs
        else:
            start = self.copy_classifier(classifier)
            log(f"RiFT: assuming model {classifier.name!r} is adversarially trained (no adversarial_training given)")
        start.eval()
        subset = train.subset(self.mrc_examples)
        x_mrc, y_mrc = subset.x.to(start.device), subset.y.to(start.device)
        x_adv = self._pgd(self.eval_steps).attack(start, x_mrc, y_mrc).x_adv
        table = self.criticality(start, x_adv, y_mrc)
        target = min(table, key=lambda row: row["mrc"])
        tuned = self.copy_classifier(start)
        self._finetune(tuned, dict(tuned.net.named_modules())[target["module"]], train)
        sweep, chosen_model = self._sweep(start, tuned, validation)
        chosen = next(row for row in sweep if row["chosen"])
        log_rows += [{"stage": "alpha_sweep", **row} for row in sweep]
        details = {"mrc_table": table, "finetuned_module": target["module"], "alpha_sweep": sweep, "chosen_alpha": chosen["alpha"],
                   "tolerance_points": self.tolerance, "validation_examples": len(validation),
                   "clean_acc_gain": chosen["clean_acc"] - sweep[0]["clean_acc"], "robust_acc_change": chosen["robust_acc"] - sweep[0]["robust_acc"],
                   "assumed_adversarially_trained": self.adversarial_training is None}
        details["markdown"], details["html"] = self._render(details)
        return DefenseResult(classifier=chosen_model, log=log_rows, training_time_s=time.perf_counter() - started, epochs=epochs, details=details)

    def _render(self, details: dict[str, Any]) -> tuple[str, str]:
        header = "| module | type | parameters | MRC | robust acc under worst-case weight perturbation |"
        rows = [f"| {r['module']}{' (fine-tuned)' if r['module'] == details['finetuned_module'] else ''} | {r['type']} | {r['parameters']} "
                f"| {r['mrc']:.4f} | {100 * r['robust_acc_worst']:.1f}% |" for r in details["mrc_table"]]
        sweep = ["| alpha | clean acc | PGD-10 acc | chosen |", "|---|---|---|---|"]
        sweep += [f"| {r['alpha']:.2f} | {100 * r['clean_acc']:.1f}% | {100 * r['robust_acc']:.1f}% | {'yes' if r['chosen'] else ''} |"
                  for r in details["alpha_sweep"]]
        rule = (f"Chosen alpha {details['chosen_alpha']:.2f}: best validation clean accuracy whose PGD-{self.eval_steps} accuracy is at most "
                f"{details['tolerance_points']:g} points below alpha=0 ({details['validation_examples']} held-out training examples); "
                f"clean {100 * details['clean_acc_gain']:+.1f} points, robust {100 * details['robust_acc_change']:+.1f} points.")
        markdown = "\n".join(["**Module robust criticality**", "", header, "|---|---|---|---|---|", *rows, "",
                              "**Interpolation sweep**", "", *sweep, "", rule])
        xs = [r["alpha"] for r in details["alpha_sweep"]]
        plot = line_plot({"clean": (xs, [100 * r["clean_acc"] for r in details["alpha_sweep"]]),
                          f"PGD-{self.eval_steps}": (xs, [100 * r["robust_acc"] for r in details["alpha_sweep"]])},
                         "alpha (0 = adversarially trained, 1 = fine-tuned)", "accuracy (%)", "RiFT interpolation sweep")
        table_html = "".join(f"<tr><td>{html.escape(r['module'])}</td><td>{r['type']}</td><td>{r['parameters']}</td><td>{r['mrc']:.4f}</td>"
                             f"<td>{100 * r['robust_acc_worst']:.1f}%</td></tr>" for r in details["mrc_table"])
        html_text = (f"<h4>Module robust criticality</h4><table><tr><th>module</th><th>type</th><th>parameters</th><th>MRC</th>"
                     f"<th>robust acc under worst-case weight perturbation</th></tr>{table_html}</table>"
                     f"<p>Fine-tuned: {html.escape(details['finetuned_module'])}</p>{plot}<p>{html.escape(rule)}</p>")
        return markdown, html_text
