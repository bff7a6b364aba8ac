"""The `extraction` and `unlearnable` audit entries end to end on digits, at tiny budgets."""

from __future__ import annotations

import torch

import secsuite
from secsuite.data import load_dataset
from secsuite.report import Report
from secsuite.threat import parse_config


def test_audit_sections_from_one_config(tmp_path):
    config = parse_config({
        "model": {"source": "zoo:small_cnn", "train_epochs": 5},
        "data": {"source": "digits", "limit": 200},
        "threat": {"eps": [0.0, 0.1], "query_budget": 300, "seed": 0},
        "evaluate": [
            {"kind": "attack", "name": "fgsm"},
            {"kind": "extraction", "name": "extraction", "methods": ["knockoff", "dfme", "cabage"], "output": "label",
             "pool_size": 200, "knockoff": {"epochs": 2}, "cabage": {"clone_steps": 1, "generators": 2}},
            {"kind": "unlearnable", "name": "cuda", "mix": 1.0, "epochs": 2, "key": 5, "adversarial": True,
             "adversarial_steps": 2},
        ],
        "output": {"formats": ["json", "md", "html"]},
    })
    report = secsuite.audit(config, out_dir=tmp_path)
    extraction = report.extraction
    assert [m.method for m in extraction.methods] == ["knockoff", "cabage"]
    assert [r.method for r in extraction.refused] == ["dfme"] and "label" in extraction.refused[0].reason
    spent = {m.method: m.queries_spent for m in extraction.methods}
    assert spent == {"knockoff": 200, "cabage": 300}
    unlearnable = report.unlearnable
    # Both regimes, the adversarial one at the threat's smallest nonzero eps.
    assert [(r.training_set, r.mix, r.regime) for r in unlearnable.rows] == [
        ("clean", 0.0, "erm"), ("protected", 1.0, "erm"), ("clean", 0.0, "pgd-at linf eps=0.1"), ("protected", 1.0, "pgd-at linf eps=0.1")]
    # The written protected set reloads through the ordinary loader with the audit's key.
    written = load_dataset(unlearnable.dataset)
    digits = load_dataset("digits")
    assert torch.equal(written.train.y, digits.train.y)
    assert not torch.allclose(written.train.x, digits.train.x, atol=0.01)
    md = (tmp_path / "report.md").read_text()
    assert "## extraction" in md and "| cabage | 300 |" in md and "## unlearnable" in md
    html = (tmp_path / "report.html").read_text()
    assert "Clone accuracy vs queries" in html and "http" not in html.split("<h2>extraction</h2>")[1].split("<h2>")[0]
    assert Report.model_validate_json((tmp_path / "report.json").read_text()).extraction == extraction
