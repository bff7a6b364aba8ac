"""secsuite: privacy and security evaluation of PyTorch image classifiers.

    import secsuite
    report = secsuite.audit()                       # the embedded default (digits, small CNN)
    report = secsuite.evaluate(model, data, threat, attacks=["fgsm", "pgd"])

Heavy modules are imported on first use so that `import secsuite` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from secsuite.report import Report

_LAZY = {
    "ThreatModel": "secsuite.threat", "AuditConfig": "secsuite.threat", "load_config": "secsuite.threat",
    "Classifier": "secsuite.model", "Dataset": "secsuite.data", "load_dataset": "secsuite.data",
    "Report": "secsuite.report", "load_classifier": "secsuite.sources",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'secsuite' has no attribute {name!r}")


def audit(config=None, out_dir=None, write: bool = True) -> "Report":
    """Run an audit from an AuditConfig, a TOML path, or None (the embedded default); see secsuite.audit.audit."""
    from secsuite.audit import audit as run

    return run(config, out_dir=out_dir, write=write)


def evaluate(model, data, threat=None, attacks=("fgsm", "pgd", "cw"), batch_size: int = 256) -> "Report":
    """Evaluate a model on data under a threat model with the named attacks; returns a Report (nothing written).

    model: a Classifier, or an nn.Module taking [0,1] images; evaluated in eval mode, and left in the mode it came in.
    data: a secsuite Dataset, a tuple (x, y), a torch DataLoader of (x, y) batches, or any torch Dataset of
    (image, label) items (Subset, TensorDataset, ImageFolder); num_classes comes from the data when it declares
    it, otherwise from the model. threat: a ThreatModel, a dict of its fields, or None (defaults).
    attacks: names ("fgsm", "pgd", "cw", "art:ClassName") or dicts {"name": ..., **params}.
    """
    import torch

    from secsuite.audit import versions
    from secsuite.data import as_dataset
    from secsuite.evaluation import clean_section, evaluate_attacks, validity_warnings
    from secsuite.model import Classifier, output_classes
    from secsuite.report import DataInfo, Meta, ModelInfo, Report
    from secsuite.threat import EvaluateSpec, ThreatModel

    data = as_dataset(data, lambda x: model.num_classes if isinstance(model, Classifier) else output_classes(model, x[:1]))
    if not isinstance(model, Classifier):
        model = Classifier(model, data.num_classes, data.input_shape, name=type(model).__name__)
    threat = threat if isinstance(threat, ThreatModel) else ThreatModel(**(threat or {}))
    specs = []
    for attack in attacks:
        spec = {"name": attack} if isinstance(attack, str) else dict(attack)
        if spec["name"].startswith("art:"):
            spec = {**spec, "kind": "art", "name": spec["name"][4:]}
        specs.append(EvaluateSpec(**spec))
    model.check_inputs(data.x, data.y)
    torch.manual_seed(threat.seed)
    clean = clean_section(model, data, batch_size)
    result = evaluate_attacks(model, data, threat, specs, batch_size)
    return Report(
        meta=Meta(seed=threat.seed, versions=versions(), device=str(model.device)),
        model=ModelInfo(source=model.name, num_classes=model.num_classes, input_shape=list(model.input_shape),
                        parameters=sum(p.numel() for p in model.parameters())),
        data=DataInfo(source=data.name, n_train=0, n_eval=len(data), class_counts=data.class_counts()), threat=threat, clean=clean,
        attacks=result.entries, worst_case=result.worst_case, warnings=validity_warnings(clean, result.entries),
    )
