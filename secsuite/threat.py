"""ThreatModel and AuditConfig: one validated description of what the attacker can do and what to run."""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, field_validator, model_validator

from secsuite.errors import ConfigError

Norm = Literal["linf", "l2"]
# Numbers are strict (TOML `true` is not 1) and finite (no inf or nan): a non-finite budget, rate or
# normalisation would run and produce a report of meaningless numbers.
Number = StrictFloat
Count = StrictInt
Size = Annotated[StrictInt, Field(gt=0)]
# Attack parameters that the threat model sets for every attack.
THREAT_FIELDS = ("eps", "norm", "targeted", "seed")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _non_finite_path(value: Any, path: str) -> str | None:
    """The dotted path of the first inf/nan float inside a free-form parameter value, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite_path(item, f"{path}.{key}")
        if found:
            return found
    return None


class _Parameters(BaseModel):
    """A section whose extra fields are a method's constructor parameters."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _finite_params(self):
        for key, value in self.params().items():
            found = _non_finite_path(value, key)
            if found:
                raise ValueError(f"{found} must be a finite number")
        return self


class ThreatModel(_Strict):
    """What the attacker may do. `eps` is one budget or a grid of budgets in [0,1] pixel units."""

    norm: Norm = "linf"
    eps: list[Number] = Field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3])
    targeted: bool = False
    knowledge: Literal["white-box", "black-box"] = "white-box"
    query_budget: Count | None = Field(default=None, gt=0)
    data_access: Number = Field(default=1.0, ge=0.0, le=1.0)
    seed: Count = 0

    @field_validator("eps", mode="before")
    @classmethod
    def _eps_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, (int, float)) else value

    @field_validator("eps")
    @classmethod
    def _eps_valid(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("needs at least one value")
        for e in value:
            if not e >= 0:  # also rejects NaN
                raise ValueError(f"must be >= 0, got {e}")
        return sorted(set(value))

    @model_validator(mode="after")
    def _linf_budget_within_pixel_range(self) -> "ThreatModel":
        # An Linf budget of 1 already reaches every image in [0,1]; a larger one is a unit mistake (e.g. 8 for 8/255).
        if self.norm == "linf" and self.eps[-1] > 1:
            raise ValueError(f"eps: an linf budget of {self.eps[-1]:g} exceeds 1, the whole [0,1] pixel range (8/255 is 0.031)")
        return self


class ModelSpec(_Strict):
    source: str = "zoo:small_cnn"
    weights: str | None = None
    num_classes: Count = Field(default=10, ge=2)
    input_shape: tuple[Size, Size, Size] | None = None
    mean: list[Number] | None = None
    std: list[Annotated[Number, Field(gt=0)]] | None = None
    # When no weights are given for a zoo model, train it on the training split first.
    train_epochs: Count = Field(default=30, ge=0)
    train_lr: Number = Field(default=1e-3, gt=0)
    # python: and torchscript: sources run code when loaded; only a user who vouches for it sets this.
    trust_code: bool = False

    @model_validator(mode="after")
    def _one_mean_and_std_per_channel(self) -> "ModelSpec":
        channels = self.input_shape[0] if self.input_shape else None
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and channels is not None and len(values) != channels:
                raise ValueError(f"{name}: {len(values)} values for input_shape {list(self.input_shape)}; give one per channel ({channels})")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values and std {len(self.std)}; give one per channel")
        return self


class DataSpec(_Strict):
    source: str = "digits"
    limit: Count | None = Field(default=500, gt=0)
    batch_size: Count = Field(default=256, gt=0)


class EvaluateSpec(_Parameters):
    """One evaluation; every field other than kind/name is passed to the method's constructor."""

    kind: Literal["attack", "art", "certify", "backdoor", "extraction", "unlearnable", "mpc"] = "attack"
    name: str

    @model_validator(mode="after")
    def _threat_fields_come_from_the_threat(self) -> "EvaluateSpec":
        if self.kind in ("attack", "art"):
            for key in THREAT_FIELDS:
                if key in self.params():
                    raise ValueError(f"{key} is set once for every attack in [threat]; remove it from this [[evaluate]] entry")
        return self


class DefendSpec(_Parameters):
    """One defense; every field other than name and max_clean_drop is passed to the defense's constructor."""

    name: str
    # The report warns when the defended model's clean accuracy falls more than this many points below the original's.
    max_clean_drop: Number = Field(default=10.0, ge=0, le=100)


class OutputSpec(_Strict):
    dir: str = "secsuite-report"
    formats: list[Literal["json", "md", "html"]] = Field(default_factory=lambda: ["json", "md", "html"])


class AuditConfig(_Strict):
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    threat: ThreatModel = Field(default_factory=ThreatModel)
    evaluate: list[EvaluateSpec] = Field(default_factory=list)
    defend: list[DefendSpec] = Field(default_factory=list)
    output: OutputSpec = Field(default_factory=OutputSpec)

    @model_validator(mode="after")
    def _default_evaluations(self) -> "AuditConfig":
        if not self.evaluate:
            self.evaluate = default_evaluations()
        return self

    def config_hash(self) -> str:
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_evaluations() -> list[EvaluateSpec]:
    return [
        EvaluateSpec(kind="attack", name="fgsm"),
        EvaluateSpec(kind="attack", name="pgd", steps=20),
        EvaluateSpec(kind="attack", name="cw", binary_search_steps=9, max_iterations=100),
    ]


def format_validation_error(error: ValidationError, source: str) -> str:
    """First problem of a pydantic error as `source: field.path: message`."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{source}: {location}: {message}"


def parse_config(data: dict[str, Any], source: str = "config") -> AuditConfig:
    try:
        return AuditConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def load_config(path: str | Path | None) -> AuditConfig:
    """Load and validate a TOML audit config; None gives the embedded default."""
    if path is None:
        return AuditConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    return parse_config(data, str(path))
