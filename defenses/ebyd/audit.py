"""`[[evaluate]] kind = "backdoor"`: EBYD on the audited model (no knowledge of any trigger), optionally with a planted control.

Parameters (all optional) are EBYD's constructor arguments plus:
With the default `reference_labels` (all other labels) the Neural Cleanse scan covers every label, so the
full Neural Cleanse baseline detector (MAD anomaly index > 2) is reported alongside at no extra cost.
- `plant` ("badnets" | "blended"), `plant_target`, `plant_rate`, `plant_epochs`: train a fresh BatchNorm CNN
  (attacks.backdoor.bn_cnn) with that backdoor on the audit's training data and run the same pipeline on it,
  a positive control showing whether EBYD can see a backdoor at this data scale. Its CA/ASR before and after
  removal and DER are measured with the planted trigger on the audit's evaluation images.
"""

from __future__ import annotations

import torch

from attacks.backdoor import BackdoorAttack, bn_cnn, make_trigger
from attacks.evasion.base import check_positive_int
from defenses.ebyd import EBYD, Exposure, anomaly_index, clean_subset, der
from secsuite.data import Dataset
from secsuite.errors import ConfigError
from secsuite.model import Classifier
from secsuite.sections.backdoor import Curve, NeuralCleanseScan, Removal, Result, Section

PLANT_KEYS = ("plant", "plant_target", "plant_rate", "plant_epochs")


def _result(subject: str, model: Classifier, exposure: Exposure, evaluation: Dataset, clean: Dataset,
            attack: BackdoorAttack | None) -> Result:
    ev, u, trigger = exposure.evidence, exposure.unlearning, exposure.trigger
    eval_x, eval_y, clean_x, clean_y = evaluation.x, evaluation.y, clean.x, clean.y
    planted_asr = None
    removal = skipped = None
    if attack is not None:
        planted = attack.metrics(model, evaluation)
        planted_asr = planted.asr
    if exposure.removal is not None:
        pruned = exposure.removal.classifier
        ca_before, ca_after = model.accuracy(eval_x, eval_y), pruned.accuracy(eval_x, eval_y)
        probe = clean_x[clean_y != ev.label]
        recovered_after = (pruned.predict(trigger.apply(probe.to(pruned.device))).cpu() == ev.label).float().mean().item()
        asr_after = rating = None
        if attack is not None:
            asr_after = attack.metrics(pruned, evaluation).asr
            rating = der(ca_before, ca_after, planted_asr, asr_after)
        removal = Removal(threshold=exposure.removal.chosen.threshold, pruned_channels=exposure.removal.chosen.pruned,
                          sweep=[vars(step) for step in exposure.removal.sweep], clean_acc_before=ca_before, clean_acc_after=ca_after,
                          asr_before=planted_asr, asr_after=asr_after, recovered_trigger_asr_after=recovered_after, der=rating)
    elif exposure.backdoored:
        skipped = "the model has no BatchNorm layers (removal learns BatchNorm channel masks)"
    scan = None
    if len(exposure.triggers) == model.num_classes:
        norms = [t.l1 for t in sorted(exposure.triggers, key=lambda t: t.label)]
        index = anomaly_index(norms)
        flagged = max(range(len(index)), key=index.__getitem__)
        scan = NeuralCleanseScan(l1=norms, anomaly_index=index, flagged_label=flagged if index[flagged] > 2 else None)
    references = [(ev.label + k) % model.num_classes for k in range(1, len(ev.reference_l1) + 1)]
    return Result(subject=subject, backdoored=exposure.backdoored, label=ev.label, collapse=ev.collapse, collapse_steps=ev.collapse_steps,
                  histogram_variance=ev.variance, trigger_l1=ev.trigger_l1, reference_labels=references, reference_l1=ev.reference_l1,
                  trigger_ratio=ev.trigger_ratio, blend_ratio=ev.blend_ratio, trigger_success=trigger.success, mask=trigger.mask[0].tolist(),
                  pattern=trigger.pattern.tolist(), curve=Curve(steps=u.steps, clean_acc=u.clean_acc, top_fraction=u.top_fraction),
                  planted_asr=planted_asr, removal=removal, removal_skipped=skipped, neural_cleanse=scan)


def _plan(spec, num_classes: int, seed: int) -> tuple[EBYD, BackdoorAttack | None, int]:
    """The defense, the planted control's attack (or None) and its training epochs, from the entry's parameters."""
    params = spec.params()
    plant = {key: params.pop(key) for key in PLANT_KEYS if key in params}
    try:
        defense = EBYD(**{"seed": seed, **params})
        attack = None
        if plant:
            trigger = make_trigger(plant.get("plant", "badnets"))
            attack = BackdoorAttack(trigger, target=plant.get("plant_target", 0), rate=plant.get("plant_rate", 0.1),
                                    num_classes=num_classes, seed=seed)
        epochs = check_positive_int("plant_epochs", plant.get("plant_epochs", 10))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"evaluate backdoor: {error}") from None
    return defense, attack, epochs


def check(spec, config) -> None:
    """What `run` would refuse in this entry, found without a model or data (`secsuite validate`)."""
    _plan(spec, config.model.num_classes, config.threat.seed)


def run(context, spec) -> Section:
    defense, attack, plant_epochs = _plan(spec, context.classifier.num_classes, context.threat.seed)
    data, classifier = context.data, context.classifier
    fraction = defense.clean_fraction if defense.clean_fraction is not None else min(context.threat.data_access, 0.05)
    clean = clean_subset(data.train, fraction, context.threat.seed)
    results = [_result("audited model", classifier, defense.expose(classifier, clean), context.eval_data, clean, None)]
    if attack is not None:
        torch.manual_seed(context.threat.seed)
        control = Classifier(bn_cnn(classifier.num_classes, classifier.input_shape), classifier.num_classes, classifier.input_shape,
                             name="planted control").to(classifier.device)
        attack.train(control, data.train, epochs=plant_epochs, lr=2e-3, seed=context.threat.seed)
        results.append(_result(f"planted control: bn_cnn, {attack.describe()}", control, defense.expose(control, clean),
                               context.eval_data, clean, attack))
    return Section(clean_size=len(clean), bn_eval=defense.bn_eval, thresholds=vars(defense.thresholds), results=results)
