"""Checkpoints of a running audit, so that `secsuite audit CONFIG --resume` redoes only unfinished work.

Everything lives under OUT/.state/<config hash>/: the trained model (model.pt), each finished
(attack, eps) evaluation (per-example flags, norms and counts as tensors), and each finished
extra section or defense (JSON). Every file is written to a temp name and renamed, so a kill at
any instant leaves either the old state or the new one, never half a file. A different config
has a different hash and never sees these files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from secsuite.files import save_torch, write_atomic


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


class RunState:
    def __init__(self, out_dir: str | Path, config_hash: str, reuse: bool):
        self.root = Path(out_dir) / ".state" / config_hash
        # Without --resume the state is written (for a later resume) but never read.
        self.reuse = reuse

    def _load_tensors(self, path: Path) -> Any:
        if not (self.reuse and path.is_file()):
            return None
        return torch.load(path, weights_only=True)

    def load_model(self) -> dict[str, torch.Tensor] | None:
        return self._load_tensors(self.root / "model.pt")

    def save_model(self, state_dict: dict[str, torch.Tensor]) -> None:
        save_torch(self.root / "model.pt", state_dict)

    def load_evaluation(self, key: str) -> dict | None:
        return self._load_tensors(self.root / "evaluations" / f"{_safe(key)}.pt")

    def save_evaluation(self, key: str, outcome: dict) -> None:
        save_torch(self.root / "evaluations" / f"{_safe(key)}.pt", outcome)

    def load_step(self, key: str) -> Any:
        path = self.root / "steps" / f"{_safe(key)}.json"
        return json.loads(path.read_text()) if self.reuse and path.is_file() else None

    def save_step(self, key: str, payload: Any) -> None:
        write_atomic(self.root / "steps" / f"{_safe(key)}.json", json.dumps(payload))
