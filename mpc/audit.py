"""`[[evaluate]] kind = "mpc"`: private inference of the audited model and its MPC-friendly variants.

ViTs get the attention/activation variants (fine-tuned by distillation from the audited model)
and, with search_mu set, an MPCViT-searched model (on Quad GeLU); CNNs with max-pooling get an average-pooling
variant. All variants run in one party session on the same private batch.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from torch import nn

from mpc.cost import PROFILES
from mpc.inference import Knobs, PrivateResult, private_inference_many
from mpc.layers import fine_tune, to_variant
from mpc.search import mpcvit_search
from secsuite.errors import ConfigError
from secsuite.model import Classifier
from secsuite.sections.mpc import KnobResult, OpCost, Section, Variant
from secsuite.threat import format_validation_error
from secsuite.zoo import ACTIVATIONS, ATTENTIONS, Block


class MPCOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variants: list[str] = Field(default_factory=lambda: ["relu_softmax+quad", "scale+quad", "2quad+quad"])  # ViT: attention+activation
    search_mu: float | None = 0.5
    fine_tune_epochs: int = Field(3, ge=0)
    batch_size: int = Field(16, ge=1)
    parties: int = Field(2, ge=2)
    private_weights: bool = True
    exp_iterations: int = 8
    reciprocal_iterations: int = 10
    precision_bits: int = 16
    sqrt_iterations: int = 3
    calibrate: bool = True  # public power-of-two prescales for inv_sqrt/reciprocal from the training data (mpc.calibration)
    calibration_size: int = Field(512, ge=1)  # training images used for the calibration
    knob_sweep: list[dict[str, int]] = Field(default_factory=list)  # Knobs overrides, run on the audited model
    min_agreement: float = Field(0.99, ge=0, le=1)
    timeout_s: float = Field(600.0, gt=0)


def _parse_variant(text: str) -> tuple[str, str]:
    attention, _, activation = text.partition("+")
    if attention not in ATTENTIONS or activation not in ACTIVATIONS:
        raise ConfigError(f"mpc variant {text!r} must be ATTENTION+ACTIVATION with attention in {ATTENTIONS} "
                          f"and activation in {tuple(ACTIVATIONS)}")
    return attention, activation


def _candidates(context, options: MPCOptions) -> list[tuple[Classifier, str | None, str | None]]:
    original = context.classifier.eval()
    found = [(original, None, None)]
    train = context.data.train
    is_vit = any(isinstance(m, Block) for m in original.modules())
    if is_vit:
        for text in options.variants:
            attention, activation = _parse_variant(text)
            variant = to_variant(original, attention, activation)
            fine_tune(variant, original, train, epochs=options.fine_tune_epochs, seed=context.threat.seed)
            found.append((variant.eval(), attention, activation))
        if options.search_mu is not None:
            searched = mpcvit_search(to_variant(original, activation="quad"), train, mu=options.search_mu, search_epochs=options.fine_tune_epochs,
                                     retrain_epochs=options.fine_tune_epochs, seed=context.threat.seed, teacher=original)
            found.append((searched.classifier.eval(), "mpcvit", "quad"))
    elif any(isinstance(m, nn.MaxPool2d) for m in original.modules()):
        variant = to_variant(original, avg_pool=True)
        fine_tune(variant, original, train, epochs=options.fine_tune_epochs, seed=context.threat.seed)
        found.append((variant.eval(), None, None))
    return found


def agrees_with_plaintext(result: PrivateResult, min_agreement: float) -> bool:
    """At least `min_agreement` argmax agreement, and every private logit closer to plaintext than plaintext's largest logit.

    The second condition catches outputs that are noise (parties out of step, fixed-point overflow) even where the
    argmax survives by chance, as it can on a small batch.
    """
    return result.argmax_agreement >= min_agreement and result.max_abs_error < result.plain_logits.abs().max().item()


def _variant(result: PrivateResult, clean_acc: float, y, attention, activation, min_agreement: float) -> Variant:
    return Variant(
        name=result.name, attention=attention, activation=activation, clean_acc=clean_acc,
        private_acc=(result.logits.argmax(1) == y).float().mean().item(), argmax_agreement=result.argmax_agreement,
        max_abs_logit_error=result.max_abs_error if math.isfinite(result.max_abs_error) else None, agrees=agrees_with_plaintext(result, min_agreement),
        bytes=result.total_bytes, bytes_per_party=result.bytes, rounds=result.max_rounds, wall_time_s=result.wall_time_s,
        compute_s=result.compute_s, modelled_latency_s=result.modelled_latency_s,
        by_op={kind: OpCost(rounds=int(e["rounds"]), bytes=int(e["bytes"]), calls=int(e["calls"]), seconds=float(e.get("seconds", 0.0))) for kind, e in result.by_op.items()},
    )


def parse_options(spec) -> tuple[MPCOptions, Knobs, list[Knobs]]:
    """The entry's options, its CrypTen knobs and the knob sweep, all checked (variants too, whatever the model)."""
    try:
        options = MPCOptions(**spec.params())
        knobs = Knobs(options.exp_iterations, options.reciprocal_iterations, options.precision_bits, options.sqrt_iterations)
        sweep = [Knobs(**{**knobs.__dict__, **override}) for override in options.knob_sweep]
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, "evaluate mpc")) from None
    except (ValueError, TypeError) as error:
        raise ConfigError(f"evaluate mpc: {str(error).splitlines()[0]}") from None
    for text in options.variants:
        _parse_variant(text)
    return options, knobs, sweep


def check(spec, config) -> None:
    """What `run` would refuse in this entry, found without a model or data (`secsuite validate`)."""
    parse_options(spec)


def run(context, spec) -> Section:
    options, knobs, sweep = parse_options(spec)
    data = context.eval_data
    x, y = data.x[: options.batch_size].cpu(), data.y[: options.batch_size].cpu()
    candidates = _candidates(context, options)
    models = [c for c, _, _ in candidates]
    calibration = context.data.train.x[: options.calibration_size].cpu() if options.calibrate else None
    seed = context.threat.seed  # reproducible shares and outputs: the audit evaluates, both parties are local
    results = private_inference_many(models, x, options.parties, knobs, options.private_weights, options.timeout_s, calibration, seed)
    variants = [_variant(r, m.accuracy(data.x, data.y), y, att, act, options.min_agreement)
                for r, (m, att, act) in zip(results, candidates)]
    knob_results = []
    for setting in sweep:
        r = private_inference_many([context.classifier], x, options.parties, setting, options.private_weights, options.timeout_s, calibration,
                                   seed)[0]
        knob_results.append(KnobResult(variant=r.name, exp_iterations=setting.exp_iterations, reciprocal_iterations=setting.reciprocal_iterations,
                                       precision_bits=setting.precision_bits, sqrt_iterations=setting.sqrt_iterations, argmax_agreement=r.argmax_agreement,
                                       max_abs_logit_error=r.max_abs_error if math.isfinite(r.max_abs_error) else None, bytes=r.total_bytes, rounds=r.max_rounds))
    return Section(
        parties=options.parties, batch_size=len(x), private_weights=options.private_weights, exp_iterations=knobs.exp_iterations,
        reciprocal_iterations=knobs.reciprocal_iterations, precision_bits=knobs.precision_bits, sqrt_iterations=knobs.sqrt_iterations,
        calibrated=options.calibrate, min_agreement=options.min_agreement,
        network_profiles={name: {"rtt_s": p.rtt_s, "bandwidth_bytes_per_s": p.bandwidth_bytes_per_s} for name, p in PROFILES.items()},
        variants=variants, knobs=knob_results,
    )
