"""Runs an AuditConfig: load or train the model, evaluate, run extra evaluations and defenses, assemble the report.

This is the one module that knows every package; it imports them lazily.
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib
import json
import platform
import subprocess
import sys
import time
import types
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch
from pydantic import TypeAdapter

from secsuite.data import DataSplits, Dataset, data_folder, load_dataset
from secsuite.distributed import World
from secsuite.errors import ConfigError, DataError
from secsuite.evaluation import AttackEvaluation, attack_label, clean_section, evaluate_attacks, validity_warnings
from secsuite.files import check_output_dir, save_torch, write_atomic
from secsuite.model import Classifier
from secsuite.progress import log
from secsuite.report import CleanSection, DataInfo, DefenseEntry, EpsDelta, Meta, ModelInfo, Report, ReportWarning, write_report
from secsuite.resume import RunState, fingerprint
from secsuite.sources import check_source, load_classifier
from secsuite.threat import AuditConfig, EvaluateSpec, load_config
from secsuite.training import train_classifier

# kind -> (module, report section). The module's run(context, spec) returns that section's model.
EVALUATORS: dict[str, tuple[str, str]] = {
    "certify": ("defenses.certified.audit", "certified"),
    "backdoor": ("defenses.ebyd.audit", "backdoor"),
    "extraction": ("attacks.extraction.audit", "extraction"),
    "unlearnable": ("attacks.unlearnable.audit", "unlearnable"),
    "mpc": ("mpc.audit", "mpc"),
}
VERSIONED_PACKAGES = ("secsuite", "torch", "torchvision", "numpy", "adversarial-robustness-toolbox", "crypten", "auto-lirpa", "pydantic")


@dataclass
class AuditContext:
    """What an evaluation or defense step may use: the model, the data, the threat and the main results."""

    config: AuditConfig
    classifier: Classifier
    data: DataSplits
    eval_data: Dataset
    out_dir: Path
    clean: CleanSection | None = None
    attack_evaluation: AttackEvaluation | None = None
    section_time_s: dict[str, float] = field(default_factory=dict)

    @property
    def threat(self):
        return self.config.threat

    def evaluate(self, classifier: Classifier):
        """Clean section and attack evaluation of any classifier with exactly the audit's attacks and eps grid."""
        clean = clean_section(classifier, self.eval_data, self.config.data.batch_size)
        attacks = evaluate_attacks(classifier, self.eval_data, self.threat, self.config.evaluate, self.config.data.batch_size)
        return clean, attacks


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def prepare_model(config: AuditConfig, data: DataSplits, device: str | None = None,
                  state: RunState | None = None, world: World | None = None) -> tuple[Classifier, ModelInfo]:
    """Load the configured model, or train the zoo model (seeded) when no weights are given.

    A model trained here is checkpointed in `state` and reused on resume; with a distributed
    `world` only rank 0 trains and every rank receives its weights.
    """
    world = world or World()
    spec = config.model
    input_shape = spec.input_shape or data.train.input_shape
    classifier = load_classifier(spec.source, spec.num_classes, input_shape, spec.weights, spec.mean, spec.std,
                                 device=device or ("cuda" if torch.cuda.is_available() else "cpu"), trust_code=spec.trust_code)
    for split in (data.train, data.test):
        try:
            classifier.check_inputs(split.x, split.y)
        except DataError as error:
            raise DataError(f"{split.name}: {error}") from None
    classifier.check_parameters(spec.weights or spec.source)
    classifier.check_outputs(data.test.x[:2])
    trained_here = spec.weights is None and spec.source.startswith("zoo:") and spec.train_epochs > 0
    if trained_here:
        torch.manual_seed(config.threat.seed)
        classifier = load_classifier(spec.source, spec.num_classes, input_shape, None, spec.mean, spec.std, device=classifier.device)
        if world.is_main:
            trained = state.load_model() if state is not None else None
            if trained is not None:
                log("reusing the trained model from the resume state")
                classifier.net.load_state_dict(trained)
            else:
                train_classifier(classifier, data.train, epochs=spec.train_epochs, lr=spec.train_lr, seed=config.threat.seed, description="training model")
                if state is not None:
                    state.save_model(classifier.net.state_dict())
        world.share_weights(classifier.net)
        classifier.eval()
    info = ModelInfo(source=spec.source, num_classes=spec.num_classes, input_shape=list(input_shape),
                     parameters=sum(p.numel() for p in classifier.parameters()), weights=spec.weights,
                     trained_here=trained_here, train_epochs=spec.train_epochs if trained_here else 0)
    return classifier, info


def limit_warnings(config: AuditConfig, n_test: int) -> list[ReportWarning]:
    """A limit the user asked for that the test split cannot give (the default limit is a cap, not a request)."""
    limit = config.data.limit
    if "limit" not in config.data.model_fields_set or limit is None or limit <= n_test:
        return []
    return [ReportWarning(code="limit_exceeds_split", subject="data", message=(
        f"data.limit is {limit} but the test split of {config.data.source} holds {n_test} examples; all {n_test} were evaluated"))]


def defense_warnings(spec, entry: DefenseEntry) -> list[ReportWarning]:
    """A defense that costs more clean accuracy than the config allows, and a parameter sweep whose results never moved."""
    from defenses.base import flat_sweeps

    warnings = []
    drop = -100 * entry.clean_acc_delta
    if drop > spec.max_clean_drop:
        warnings.append(ReportWarning(code="clean_accuracy_drop", subject=spec.name, message=(
            f"clean accuracy falls {drop:.1f} points ({100 * (entry.clean_acc - entry.clean_acc_delta):.1f}% -> "
            f"{100 * entry.clean_acc:.1f}%), more than the {spec.max_clean_drop:g} allowed (max_clean_drop); "
            "its robust accuracy is bought with a model that no longer does its job")))
    for parameter in flat_sweeps(entry.details):
        warnings.append(ReportWarning(code="flat_sweep", subject=spec.name, message=(
            f"the {parameter} sweep gave the same results at every value: the choice of {parameter} rests on nothing; "
            "check that the parameter reaches the model and that the evaluation budget can tell the values apart")))
    return warnings


def run_defense(context: AuditContext, spec) -> tuple[DefenseEntry, list[ReportWarning]]:
    """Fit one defense on a copy of the model, save it (state_dict + how it was made), evaluate it like the original."""
    from defenses import make_defense

    defense = make_defense(spec.name, **spec.params())
    result = defense.fit(copy.deepcopy(context.classifier), context.data.train, context.threat)
    checkpoint = context.out_dir / "models" / f"{spec.name}.pt"
    save_torch(checkpoint, result.classifier.net.state_dict())
    model_spec = context.config.model
    write_atomic(checkpoint.with_suffix(".json"), json.dumps({
        "source": model_spec.source, "weights": str(checkpoint), "num_classes": model_spec.num_classes,
        "input_shape": list(context.classifier.input_shape), "mean": model_spec.mean, "std": model_spec.std,
        "defense": spec.name, "params": defense.params(), "training_time_s": result.training_time_s, "epochs": result.epochs,
    }, indent=2))
    clean, attacks = context.evaluate(result.classifier)
    baseline = context.attack_evaluation.worst_case
    entry = DefenseEntry(
        name=spec.name, params=defense.params(), clean_acc=clean.clean_acc, clean_acc_delta=clean.clean_acc - context.clean.clean_acc,
        attacks=attacks.entries, worst_case=attacks.worst_case,
        worst_case_delta=[EpsDelta(eps=d.eps, robust_acc_delta=d.robust_acc - b.robust_acc) for d, b in zip(attacks.worst_case, baseline)],
        training_time_s=result.training_time_s, training_epochs=result.epochs, checkpoint=str(checkpoint), details=result.details,
    )
    return entry, defense_warnings(spec, entry) + validity_warnings(clean, attacks.entries, subject=spec.name)


DEFENSE_STEP = TypeAdapter(tuple[DefenseEntry, list[ReportWarning]])


def _restored_or_run(state: RunState | None, key: str, adapter: TypeAdapter, run, seed: int):
    """A finished step from the resume state, or the step run now (from the seed, so that restoring
    earlier steps does not shift the global RNG) and checkpointed."""
    saved = state.load_step(key) if state is not None else None
    if saved is not None:
        return adapter.validate_python(saved)
    torch.manual_seed(seed)
    done = run()
    if state is not None:
        state.save_step(key, adapter.dump_python(done, mode="json"))
    return done


def evaluator(kind: str) -> types.ModuleType:
    """The module behind an evaluate kind: `run(context, spec)` computes its section, `check(spec, config)`
    refuses bad parameters without a model or data."""
    try:
        return importlib.import_module(EVALUATORS[kind][0])
    except ModuleNotFoundError:
        raise ConfigError(f"evaluate kind {kind!r} is not implemented yet (planned; see the README status table)") from None


def run_evaluator(context: AuditContext, spec: EvaluateSpec):
    return evaluator(spec.kind).run(context, spec)


def check_plan(config: AuditConfig) -> None:
    """Everything about a config that can be checked without loading data or running a model: model source and
    weights file, data folder, every attack, evaluation and defense built or parsed once. `audit` calls it
    first, so that a bad name or parameter fails before any training; `validate` runs nothing else."""
    from attacks import make_attack
    from defenses import make_defense

    check_source(config.model.source, config.model.weights, config.model.trust_code)
    data_folder(config.data.source)
    threat = config.threat
    for spec in config.evaluate:
        if spec.kind in ("attack", "art"):
            make_attack(attack_label(spec), threat.eps[-1], threat.norm, threat.targeted, threat.seed, **spec.params())
        else:
            evaluator(spec.kind).check(spec, config)
    for spec in config.defend:
        make_defense(spec.name, **spec.params())


def audit(config: AuditConfig | str | Path | None = None, out_dir: str | Path | None = None, write: bool = True,
          resume: bool = False) -> Report | None:
    """Run an audit (a config object, a TOML path, or None for the embedded default) and return its report.

    Progress is checkpointed under OUT/.state/<config hash>/; `resume=True` reuses what an
    interrupted run finished. Under torchrun (WORLD_SIZE > 1) the attack evaluation is sharded
    across ranks; rank 0 runs the rest, writes and returns the report, other ranks return None.
    """
    if not isinstance(config, AuditConfig):
        config = load_config(config)
    check_plan(config)
    started = time.perf_counter()
    started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    out_dir = Path(out_dir or config.output.dir)
    world = World.from_env()
    if world.is_main and (write or resume):
        check_output_dir(out_dir)  # a folder that cannot be written fails now, not after training
    # Reproducible GPU runs: no autotuned, nondeterministic convolution algorithms.
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    section_time: dict[str, float] = {}

    tick = time.perf_counter()
    torch.manual_seed(config.threat.seed)
    data = load_dataset(config.data.source)
    # A run that writes nothing (write=False) checkpoints nothing either. The state belongs to these
    # weights, data and code: --resume refuses one that was computed from others.
    state = (RunState(out_dir, config, fingerprint(config, data, {"git_revision": git_revision(), **versions()}), reuse=resume)
             if world.is_main and (write or resume) else None)
    eval_data = data.test.subset(config.data.limit, seed=config.threat.seed)
    classifier, model_info = prepare_model(config, data, device=world.device(), state=state, world=world)
    classifier.check_inputs(eval_data.x, eval_data.y)
    section_time["model"] = time.perf_counter() - tick
    context = AuditContext(config, classifier, data, eval_data, out_dir, section_time_s=section_time)

    tick = time.perf_counter()
    # Each stage starts from the seed, so a stage restored from the state leaves the global RNG where computing it would.
    torch.manual_seed(config.threat.seed)
    clean = clean_section(classifier, eval_data, config.data.batch_size)
    attacks = evaluate_attacks(classifier, eval_data, config.threat, config.evaluate, config.data.batch_size, state=state, world=world)
    world.close()
    if not world.is_main:
        return None
    context.clean, context.attack_evaluation = clean, attacks
    section_time["attacks"] = time.perf_counter() - tick

    report = Report(
        meta=Meta(seed=config.threat.seed, config_hash=config.config_hash(), git_revision=git_revision(), versions=versions(),
                  device=str(classifier.device), started_at=started_at),
        model=model_info, data=DataInfo(source=config.data.source, n_train=len(data.train), n_eval=len(eval_data), n_test=len(data.test),
                                        limit=config.data.limit, class_counts=eval_data.class_counts()),
        threat=config.threat, clean=clean, attacks=attacks.entries, worst_case=attacks.worst_case,
        warnings=limit_warnings(config, len(data.test)) + validity_warnings(clean, attacks.entries, subject="model"),
    )
    for index, spec in enumerate(config.evaluate):
        if spec.kind in EVALUATORS:
            tick = time.perf_counter()
            section_name = EVALUATORS[spec.kind][1]
            section = _restored_or_run(state, f"section-{index}-{spec.kind}", TypeAdapter(Report.model_fields[section_name].annotation),
                                       lambda: run_evaluator(context, spec), config.threat.seed)
            setattr(report, section_name, section)
            # A section may check itself (e.g. verified accuracy above empirical robust accuracy).
            if hasattr(section, "validity_warnings"):
                report.warnings.extend(section.validity_warnings())
            section_time[section_name] = time.perf_counter() - tick
    if config.defend:
        tick = time.perf_counter()
        report.defenses = []
        for index, spec in enumerate(config.defend):
            entry, warnings = _restored_or_run(state, f"defense-{index}-{spec.name}", DEFENSE_STEP, lambda: run_defense(context, spec),
                                               config.threat.seed)
            report.warnings.extend(warnings)
            report.defenses.append(entry)
        section_time["defenses"] = time.perf_counter() - tick
    report.meta.section_time_s = section_time
    report.meta.wall_time_s = time.perf_counter() - started
    if write:
        write_report(report, out_dir, config.output.formats)
    return report


class _CallableModule(types.ModuleType):
    """`import secsuite.audit` rebinds the package attribute `secsuite.audit` from the function to this
    module; making the module callable keeps `secsuite.audit(config)` working either way."""

    def __call__(self, *args, **kwargs):
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
