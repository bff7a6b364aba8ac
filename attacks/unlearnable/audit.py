"""`[[evaluate]] kind = "unlearnable"`: protect the audit's training set with CUDA, write it, and
compare clean test accuracy of the same architecture trained on clean and protected data."""

from __future__ import annotations

from typing import Any

from attacks.unlearnable.cuda import CUDA, write_dataset
from attacks.unlearnable.evaluate import TrainingRecipe, train_and_test
from secsuite.data import DataSplits
from secsuite.errors import ConfigError
from secsuite.progress import log
from secsuite.sections.unlearnable import Row, Section
from secsuite.zoo import ZOO

OPTIONS = {"key", "blur", "kernel_size", "mix", "arch", "epochs", "lr", "batch_size", "adversarial", "adversarial_eps",
           "adversarial_steps", "write"}


def _arch(config, params: dict[str, Any]) -> str:
    if "arch" in params:
        return params["arch"]
    source = config.model.source
    return source.split(":", 1)[1] if source.startswith("zoo:") else "small_cnn"


def _plan(spec, config) -> tuple[dict[str, Any], list[CUDA], list[TrainingRecipe]]:
    """The entry's parameters, one protection per mix and the training recipes (ERM, then PGD-AT if asked), all checked."""
    params = spec.params()
    unknown = set(params) - OPTIONS
    if spec.name != "cuda":
        raise ConfigError(f"unlearnable method {spec.name!r} is not available; use name = \"cuda\"")
    if unknown:
        raise ConfigError(f"unlearnable: unknown option(s) {sorted(unknown)}; known: {sorted(OPTIONS)}")
    threat = config.threat
    arch = _arch(config, params)
    if arch not in ZOO:
        raise ConfigError(f"unlearnable: unknown arch {arch!r}; choose from {', '.join(sorted(ZOO))}")
    mixes = params.get("mix", [0.5, 1.0])
    try:
        mixes = sorted(set(mixes if isinstance(mixes, list) else [mixes]))
        protections = [CUDA(key=params.get("key", threat.seed), blur=params.get("blur", 0.3),
                            kernel_size=params.get("kernel_size", 3), mix=mix) for mix in mixes]
        recipes = [TrainingRecipe(arch=arch, epochs=params.get("epochs", 10), lr=params.get("lr", 1e-3),
                                  batch_size=params.get("batch_size", 64), seed=threat.seed)]
        if params.get("adversarial", False):
            eps = params.get("adversarial_eps", min((e for e in threat.eps if e > 0), default=0.1))
            recipes.append(TrainingRecipe(arch=recipes[0].arch, epochs=recipes[0].epochs, lr=recipes[0].lr,
                                          batch_size=recipes[0].batch_size, seed=threat.seed, adversarial_eps=eps,
                                          adversarial_steps=params.get("adversarial_steps", 5), norm=threat.norm))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"unlearnable: {error}") from None
    return params, protections, recipes


def check(spec, config) -> None:
    """What `run` would refuse in this entry, found without a model or data (`secsuite validate`)."""
    _plan(spec, config)


def run(context, spec) -> Section:
    params, protections, recipes = _plan(spec, context.config)
    train, test = context.data.train, context.eval_data
    device = context.classifier.device
    rows: list[Row] = []
    for recipe in recipes:
        clean_acc = train_and_test(train, test, recipe, device)
        rows.append(Row(training_set="clean", mix=0.0, regime=recipe.regime, clean_test_acc=clean_acc, drop=0.0))
        for cuda in protections:
            acc = train_and_test(cuda.protect(train), test, recipe, device)
            rows.append(Row(training_set="protected", mix=cuda.mix, regime=recipe.regime, clean_test_acc=acc, drop=clean_acc - acc))
            log(f"cuda mix {cuda.mix:g} {recipe.regime}: {100 * clean_acc:.1f}% -> {100 * acc:.1f}%")
    dataset = None
    if params.get("write", True):
        strongest = protections[-1]
        dataset = write_dataset(DataSplits(strongest.protect(train), context.data.test), context.out_dir / "unlearnable" / "cuda")
    first = protections[0]
    return Section(method="cuda", key=first.key, blur=first.blur, kernel_size=first.kernel_size, arch=recipes[0].arch,
                   epochs=recipes[0].epochs, n_train=len(train), n_test=len(test), dataset=dataset, rows=rows)
