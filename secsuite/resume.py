"""Checkpoints of a running audit, so that `secsuite audit CONFIG --resume` redoes only unfinished work.

Everything lives under OUT/.state/<config hash>/: the trained model (model.pt), each finished
(attack, eps) evaluation (per-example flags, norms and counts as tensors), and each finished
extra section or defense (JSON). Every file is written to a temp name and renamed, so a kill at
any instant leaves either the old state or the new one, never half a file.

A state belongs to one run: fingerprint.json records the SHA-256 of every file the model comes
from (weights, TorchScript archive, python: module), of the data as loaded, and the code (git
revision and package versions). `--resume` reuses a state only if all of them match and otherwise
refuses, naming what changed; a run without `--resume` starts from an empty state. A checkpoint
that cannot be read (truncated, corrupt) is computed again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from secsuite.data import DataSplits
from secsuite.errors import OutputError, ResumeError
from secsuite.files import save_torch, write_atomic
from secsuite.progress import log
from secsuite.sources import weights_path
from secsuite.threat import AuditConfig


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


def _file_digest(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _data_digest(data: DataSplits) -> str:
    digest = hashlib.sha256()
    for tensor in (data.train.x, data.train.y, data.test.x, data.test.y):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy())
    return digest.hexdigest()


def _source_file(source: str) -> Path | None:
    """The file a code source is read from: the TorchScript archive or the python: factory's module."""
    kind, _, rest = source.partition(":")
    if kind == "torchscript":
        return Path(rest)
    if kind == "python":
        spec = importlib.util.find_spec(rest.rpartition(":")[0])
        return Path(spec.origin) if spec is not None and spec.has_location else None
    return None


def fingerprint(config: AuditConfig, data: DataSplits, code: dict[str, str | None]) -> dict[str, Any]:
    """What the results of `config` depend on besides the config: the model's files, the data and the code."""
    model = config.model
    source_file = _source_file(model.source)
    return {
        "weights": _file_digest(weights_path(model.weights)) if model.weights else None,
        "source": _file_digest(source_file) if source_file is not None and source_file.is_file() else None,
        "data": _data_digest(data),
        "code": code,
    }


def _differences(saved: dict[str, Any], now: dict[str, Any], config: AuditConfig) -> list[str]:
    named = {"weights": f"weights file {config.model.weights}", "source": f"model source {config.model.source}",
             "data": f"data {config.data.source}"}
    found = [f"{label} (sha256 {str(saved.get(key))[:12]} -> {str(now[key])[:12]})" for key, label in named.items() if saved.get(key) != now[key]]
    old_code, new_code = saved["code"], now["code"]
    found += [f"code {name} ({old_code.get(name)} -> {new_code.get(name)})"
              for name in sorted(set(old_code) | set(new_code)) if old_code.get(name) != new_code.get(name)]
    return found


class RunState:
    def __init__(self, out_dir: str | Path, config: AuditConfig, computed_from: dict[str, Any], reuse: bool):
        """`computed_from`: this run's `fingerprint`."""
        self.root = Path(out_dir) / ".state" / config.config_hash()
        # Without --resume the state is written (for a later resume) but never read.
        self.reuse = reuse
        marker = self.root / "fingerprint.json"
        if reuse and self.root.exists():
            try:
                saved = json.loads(marker.read_text())
                if not isinstance(saved, dict) or not isinstance(saved.get("code"), dict):
                    raise ValueError("not a fingerprint")
            except (OSError, ValueError):
                raise ResumeError(f"cannot resume from {self.root}: {marker.name} is missing or unreadable, so the state may be "
                                  "from another run; run without --resume to start over") from None
            changed = _differences(saved, computed_from, config)
            if changed:
                raise ResumeError(f"cannot resume from {self.root}: it was computed with other inputs, {'; '.join(changed)}; "
                                  "run without --resume to start over")
            return
        if self.root.exists():
            try:
                shutil.rmtree(self.root)
            except OSError as error:
                raise OutputError(f"cannot clear the old resume state {self.root}: {error.strerror or error}") from None
        write_atomic(marker, json.dumps(computed_from, indent=2, sort_keys=True))

    def _read(self, path: Path, load) -> Any:
        if not (self.reuse and path.is_file()):
            return None
        try:
            return load(path)
        except Exception as error:  # truncated or corrupt: whatever the loader raises, the step is simply redone
            log(f"resume state {path} is unreadable ({type(error).__name__}); computing it again")
            return None

    def load_model(self) -> dict[str, torch.Tensor] | None:
        return self._read(self.root / "model.pt", lambda path: torch.load(path, weights_only=True))

    def save_model(self, state_dict: dict[str, torch.Tensor]) -> None:
        save_torch(self.root / "model.pt", state_dict)

    def load_evaluation(self, key: str) -> dict | None:
        return self._read(self.root / "evaluations" / f"{_safe(key)}.pt", lambda path: torch.load(path, weights_only=True))

    def save_evaluation(self, key: str, outcome: dict) -> None:
        save_torch(self.root / "evaluations" / f"{_safe(key)}.pt", outcome)

    def load_step(self, key: str) -> Any:
        return self._read(self.root / "steps" / f"{_safe(key)}.json", lambda path: json.loads(path.read_text()))

    def save_step(self, key: str, payload: Any) -> None:
        write_atomic(self.root / "steps" / f"{_safe(key)}.json", json.dumps(payload))
