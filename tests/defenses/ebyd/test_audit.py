"""The `backdoor` evaluator inside a real audit: section contents, renderings, JSON round trip."""

from __future__ import annotations

import json

import pytest

from secsuite.audit import audit
from secsuite.errors import ConfigError
from secsuite.report import Report
from secsuite.threat import parse_config


def config(**backdoor):
    return parse_config({
        "model": {"source": "zoo:small_cnn", "train_epochs": 3},
        "data": {"source": "digits", "limit": 100},
        "threat": {"eps": [0.0], "data_access": 0.1},
        "evaluate": [{"kind": "attack", "name": "fgsm"}, {"kind": "backdoor", "name": "ebyd", **backdoor}],
    })


def test_backdoor_section_in_a_digits_audit(tmp_path):
    report = audit(config(unlearn_steps=40, nc_steps=20, reference_labels=2, mask_epochs=2, plant="badnets",
                                   plant_target=3, plant_epochs=8), out_dir=tmp_path)
    section = report.backdoor
    assert section is not None and section.clean_size == round(0.05 * 1438)  # EBYD takes at most 5% by default
    audited, control = section.results
    assert audited.subject == "audited model" and control.subject.startswith("planted control")
    assert control.planted_asr is not None and control.planted_asr >= 0.9  # the control really carries a backdoor
    for result in section.results:
        assert 0 <= result.label < 10 and len(result.reference_labels) == 2
        assert len(result.mask) == 8 and len(result.pattern[0]) == 8
        assert result.curve.steps[0] == 0 and len(result.curve.steps) == len(result.curve.clean_acc)
    if audited.backdoored:  # the zoo small CNN has no BatchNorm: removal cannot run and the report says so
        assert audited.removal is None and "BatchNorm" in audited.removal_skipped
    reloaded = Report.from_json((tmp_path / "report.json").read_text())
    assert reloaded.backdoor == section
    page = (tmp_path / "report.html").read_text()
    assert "<h2>backdoor</h2>" in page and "recovered trigger" in page and "data:image/png;base64" in page
    assert "## backdoor" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["backdoor"]["bn_eval"] is True


def test_bad_backdoor_parameters_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="poison rate"):
        audit(config(plant="badnets", plant_rate=2.0, unlearn_steps=5), out_dir=tmp_path, write=False)
    with pytest.raises(ConfigError, match="unknown_option"):
        audit(config(unknown_option=1), out_dir=tmp_path, write=False)
