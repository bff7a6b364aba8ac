"""Removal: learn per-channel BatchNorm masks on the unlearned model, then prune the original model.

After unlearning, the model still fires its backdoor channels (that is what the clean inputs
collapse through). Learning masks in [0,1] that restore clean accuracy on the unlearned model
switches those channels off first (Reconstructive Neuron Pruning; EBYD uses it as its removal
step). The original model's channels whose mask fell below a threshold are then pruned; the
threshold is swept (0 ... 0.9) and chosen on the defender's clean data (and a recovered trigger, when given):
the best clean accuracy among the pruned models whose recovered trigger no longer works.

Small models have few channels each of which matters, so pruning costs clean accuracy; with
`finetune_epochs > 0` every swept pruned model is fine-tuned on the clean set with its pruned
channels held at zero before it is judged (our addition, off by default; clean data cannot re-teach
the backdoor, and fine-tuning alone, without pruning, left a BadNets MNIST model's ASR at 92%).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from defenses.ebyd.unlearning import set_batchnorm_eval
from secsuite.data import Dataset
from secsuite.model import Classifier
from secsuite.progress import progress_bar
from secsuite.training import shuffled_batches


def batchnorm_layers(module: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(name, layer) for name, layer in module.named_modules() if isinstance(layer, nn.modules.batchnorm._BatchNorm)]


class _ChannelMask:
    """Multiplies a BatchNorm layer's output channels by a mask through a forward hook."""

    def __init__(self, layer: nn.modules.batchnorm._BatchNorm, values: torch.Tensor):
        self.values = values
        self.handle = layer.register_forward_hook(lambda _module, _inputs, output: output * self.values.view(1, -1, 1, 1))


@dataclass
class PruneStep:
    threshold: float
    pruned: int  # channels set to zero
    clean_acc: float  # on the defender's clean set
    trigger_asr: float | None  # the recovered trigger's success on the pruned model (None without one)
    finetuned: bool = False


@dataclass
class RemovalResult:
    classifier: Classifier  # the pruned original model at the chosen threshold
    masks: dict[str, list[float]]
    sweep: list[PruneStep] = field(default_factory=list)
    chosen: PruneStep | None = None


class MaskPruning:
    def __init__(self, lr: float = 0.2, epochs: int = 20, batch_size: int = 64, thresholds: list[float] | None = None,
                 max_acc_drop: float = 0.05, max_trigger_asr: float = 0.1, finetune_epochs: int = 0, finetune_lr: float = 1e-3, seed: int = 0):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        thresholds = [round(0.1 * i, 1) for i in range(10)] if thresholds is None else thresholds  # 0 ... 0.9 as in the paper
        if not thresholds or any(not 0 <= t < 1 for t in thresholds):
            raise ValueError(f"thresholds must be a non-empty list in [0, 1), got {thresholds}")
        if not 0 <= max_acc_drop <= 1:
            raise ValueError(f"max_acc_drop must be in [0, 1], got {max_acc_drop}")
        if not 0 <= max_trigger_asr <= 1:
            raise ValueError(f"max_trigger_asr must be in [0, 1], got {max_trigger_asr}")
        self.lr, self.epochs, self.batch_size, self.thresholds = lr, epochs, batch_size, sorted(thresholds)
        if finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
        self.max_acc_drop, self.max_trigger_asr, self.seed = max_acc_drop, max_trigger_asr, seed
        self.finetune_epochs, self.finetune_lr = finetune_epochs, finetune_lr

    def learn_masks(self, unlearned: Classifier, clean: Dataset) -> dict[str, torch.Tensor]:
        """SGD on CE over the clean set with only the masks trainable, BatchNorm statistics frozen."""
        model = copy.deepcopy(unlearned)
        layers = batchnorm_layers(model.net)
        if not layers:
            raise ValueError("model: mask pruning needs BatchNorm layers and this model has none")
        masks = {name: torch.ones(layer.num_features, device=model.device, requires_grad=True) for name, layer in layers}
        hooks = [_ChannelMask(layer, masks[name]) for name, layer in layers]
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        optimizer = torch.optim.SGD(list(masks.values()), lr=self.lr, momentum=0.9)
        generator = torch.Generator().manual_seed(self.seed)
        x_all, y_all = clean.x.to(model.device), clean.y.to(model.device)
        model.eval()
        set_batchnorm_eval(model)
        with progress_bar("learning BatchNorm channel masks", total=self.epochs) as advance:
            for _ in range(self.epochs):
                for index in shuffled_batches(len(clean), self.batch_size, generator, model.device):
                    loss = F.cross_entropy(model(x_all[index]), y_all[index])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    with torch.no_grad():
                        for values in masks.values():
                            values.clamp_(0, 1)
                advance()
        for hook in hooks:
            hook.handle.remove()
        return {name: values.detach() for name, values in masks.items()}

    @staticmethod
    def prune(classifier: Classifier, masks: dict[str, torch.Tensor], threshold: float) -> tuple[Classifier, int]:
        """A copy of `classifier` whose BatchNorm channels with mask <= threshold output zero."""
        pruned = copy.deepcopy(classifier)
        count = 0
        with torch.no_grad():
            for name, layer in batchnorm_layers(pruned.net):
                off = masks[name].to(layer.weight.device) <= threshold
                layer.weight[off] = 0.0
                layer.bias[off] = 0.0
                count += int(off.sum())
        return pruned, count

    def finetune(self, pruned: Classifier, clean: Dataset) -> None:
        """Adam on clean CE (batches of 32, BatchNorm statistics re-estimated on the clean set, since the pruned
        channels changed what the following layers see), re-zeroing the pruned channels after every step."""
        off = {name: (layer.weight == 0) & (layer.bias == 0) for name, layer in batchnorm_layers(pruned.net)}
        layers = dict(batchnorm_layers(pruned.net))
        optimizer = torch.optim.Adam(pruned.parameters(), lr=self.finetune_lr)
        generator = torch.Generator().manual_seed(self.seed)
        x_all, y_all = clean.x.to(pruned.device), clean.y.to(pruned.device)
        batch = min(32, self.batch_size)
        with progress_bar("fine-tuning the pruned model", total=self.finetune_epochs) as advance:
            for _ in range(self.finetune_epochs):
                for index in shuffled_batches(len(clean), batch, generator, pruned.device):
                    pruned.train()
                    loss = F.cross_entropy(pruned(x_all[index]), y_all[index])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    with torch.no_grad():
                        for name, mask in off.items():
                            layers[name].weight[mask] = 0.0
                            layers[name].bias[mask] = 0.0
                advance()
        pruned.eval()

    def run(self, original: Classifier, unlearned: Classifier, clean: Dataset,
            trigger: Callable[[torch.Tensor], torch.Tensor] | None = None, target: int | None = None) -> RemovalResult:
        """Sweep the thresholds (each pruned model fine-tuned first when `finetune_epochs > 0`) and keep the best
        clean accuracy among those whose recovered-trigger ASR is at most `max_trigger_asr` (ties: less pruning).

        Without a trigger, the most pruning within `max_acc_drop` of the original clean accuracy is kept.
        Everything is judged on the defender's clean set; no test data is used.
        """
        masks = self.learn_masks(unlearned, clean)
        base_acc = original.accuracy(clean.x, clean.y)
        probe = clean.x[clean.y != target] if target is not None else clean.x
        sweep, models = [], []
        seen: dict[int, int] = {}
        for threshold in self.thresholds:
            model, count = self.prune(original, masks, threshold)
            if count in seen:  # same channels as a lower threshold (masks are sorted): reuse its result
                step = sweep[seen[count]]
                sweep.append(PruneStep(threshold, count, step.clean_acc, step.trigger_asr, step.finetuned))
                models.append(models[seen[count]])
                continue
            seen[count] = len(sweep)
            finetuned = bool(self.finetune_epochs) and count > 0
            if finetuned:
                self.finetune(model, clean)
            asr = None
            if trigger is not None and target is not None:
                asr = (model.predict(trigger(probe)) == target).float().mean().item()
            sweep.append(PruneStep(threshold, count, model.accuracy(clean.x, clean.y), asr, finetuned))
            models.append(model)
        allowed = [i for i, step in enumerate(sweep) if step.clean_acc >= base_acc - self.max_acc_drop]
        if trigger is not None and target is not None:
            removed = [i for i in range(len(sweep)) if sweep[i].trigger_asr <= self.max_trigger_asr]
            if removed:
                best = max(removed, key=lambda i: (sweep[i].clean_acc, -sweep[i].pruned))
            else:
                best = min(range(len(sweep)), key=lambda i: (sweep[i].trigger_asr, -sweep[i].clean_acc))
        else:
            best = max(allowed) if allowed else 0
        return RemovalResult(models[best], {k: v.cpu().tolist() for k, v in masks.items()}, sweep, sweep[best])
