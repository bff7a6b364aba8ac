"""Same config and seed: identical report JSON except timing fields; a different seed changes it."""

from __future__ import annotations

import tomllib

from secsuite.audit import audit
from secsuite.testing import TIMING_FIELDS, comparable
from secsuite.threat import AuditConfig

# Shared by the resume and distributed tests: trains the zoo CNN (seeded init and shuffle) and runs a
# random-start attack, over 4 batches of 16 so that two ranks each get a share.
TINY_AUDIT = """
[model]
train_epochs = 2
[data]
limit = 64
batch_size = 16
[threat]
eps = [0.0, 0.05, 0.1, 0.2]
seed = 3
[[evaluate]]
name = "fgsm"
[[evaluate]]
name = "pgd"
steps = 3
[output]
formats = ["json"]
"""
# Other engineers commit while tests run; the revision is not part of what a run computes.
IGNORED = TIMING_FIELDS | {"git_revision"}


def tiny_config(**threat) -> AuditConfig:
    data = tomllib.loads(TINY_AUDIT)
    data["threat"].update(threat)
    return AuditConfig.model_validate(data)


def test_same_seed_same_report_except_timings():
    first, second = audit(tiny_config(), write=False), audit(tiny_config(), write=False)
    assert comparable(first, IGNORED) == comparable(second, IGNORED)
    assert first.meta.config_hash == second.meta.config_hash and first.meta.seed == 3
    assert first.model.trained_here and {"torch", "secsuite", "python"} <= set(first.meta.versions)


def test_another_seed_gives_other_results():
    """The seed reaches the results (model init, shuffle, random starts), not only the meta fields."""
    results = lambda report: comparable(report)["attacks"]  # noqa: E731
    assert results(audit(tiny_config(), write=False)) != results(audit(tiny_config(seed=4), write=False))
