"""ThreatModel and AuditConfig: one validated description of what the attacker can do and what to run."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from secsuite.errors import ConfigError

Norm = Literal["linf", "l2"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ThreatModel(_Strict):
    """What the attacker may do. `eps` is one budget or a grid of budgets in [0,1] pixel units."""

    norm: Norm = "linf"
    eps: list[float] = Field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3])
    targeted: bool = False
    knowledge: Literal["white-box", "black-box"] = "white-box"
    query_budget: int | None = Field(default=None, gt=0)
    data_access: float = Field(default=1.0, ge=0.0, le=1.0)
    seed: int = 0

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


class ModelSpec(_Strict):
    source: str = "zoo:small_cnn"
    weights: str | None = None
    num_classes: int = Field(default=10, ge=2)
    input_shape: tuple[int, int, int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    # When no weights are given for a zoo model, train it on the training split first.
    train_epochs: int = Field(default=30, ge=0)
    train_lr: float = Field(default=1e-3, gt=0)
    # python: and torchscript: sources run code when loaded; only a user who vouches for it sets this.
    trust_code: bool = False


class DataSpec(_Strict):
    source: str = "digits"
    limit: int | None = Field(default=500, gt=0)
    batch_size: int = Field(default=256, gt=0)


class EvaluateSpec(BaseModel):
    """One evaluation; every field other than kind/name is passed to the method's constructor."""

    model_config = ConfigDict(extra="allow")
    kind: Literal["attack", "art", "certify", "backdoor", "extraction", "unlearnable", "mpc"] = "attack"
    name: str

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DefendSpec(BaseModel):
    """One defense; every field other than name is passed to the defense's constructor."""

    model_config = ConfigDict(extra="allow")
    name: str

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


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
