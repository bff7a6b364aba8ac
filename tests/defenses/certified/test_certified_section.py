"""The certified report section: audit integration, rendering, and the verified-above-empirical warning."""

from __future__ import annotations

import pytest

from secsuite import audit
from secsuite.errors import ConfigError
from secsuite.sections.certified import EmpiricalCurve, MethodCurve, Section, VerifiedPoint, html, markdown
from secsuite.threat import parse_config


def section(verified: float, empirical: float, broken: int | None = 0) -> Section:
    return Section(
        norm="linf", n_examples=10, clean_acc=0.9,
        methods=[MethodCurve(method="CROWN", results=[VerifiedPoint(eps=0.0, verified_acc=0.9, time_per_example_s=0.001),
                                                      VerifiedPoint(eps=0.1, verified_acc=verified, time_per_example_s=0.002,
                                                                    verified_but_broken=broken)])],
        empirical=[EmpiricalCurve(name="worst case", eps=[0.0, 0.1], robust_acc=[0.9, empirical])],
        empirical_on_subset={"0": 0.9, "0.1": empirical},
    )


def test_warning_when_verified_exceeds_empirical():
    assert section(0.5, 0.6).validity_warnings() == []
    warnings = section(0.7, 0.6).validity_warnings()
    assert [w.code for w in warnings] == ["verified_above_empirical"] and "0.1" in warnings[0].message
    assert [w.code for w in section(0.5, 0.6, broken=2).validity_warnings()] == ["verified_but_broken"]


def test_renderers():
    rendered = html(section(0.5, 0.6))
    assert rendered.startswith("<h2>certified</h2>") and "data:image/png;base64," in rendered and "http" not in rendered
    text = markdown(section(0.5, 0.6))
    assert "| CROWN | 0.1 | 50.0% | 60.0% |" in text


def test_audit_certify_section(tmp_path):
    config = parse_config({
        "model": {"source": "zoo:small_cnn", "train_epochs": 3},
        "data": {"source": "digits", "limit": 40},
        "threat": {"norm": "linf", "eps": [0.0, 0.01, 0.05]},
        "evaluate": [{"kind": "attack", "name": "pgd", "steps": 10},
                     {"kind": "certify", "name": "auto_lirpa", "methods": ["IBP", "CROWN-IBP"], "limit": 20}],
        "output": {"dir": str(tmp_path), "formats": ["json", "html"]},
    })
    report = audit(config, out_dir=tmp_path)
    certified = report.certified
    assert certified is not None and certified.n_examples == 20 and [m.method for m in certified.methods] == ["IBP", "CROWN-IBP"]
    pgd = {r.eps: r.robust_acc for r in report.attacks[0].results}
    for curve in certified.methods:
        assert [p.eps for p in curve.results] == [0.0, 0.01, 0.05]
        assert all(p.verified_but_broken == 0 and p.time_per_example_s > 0 for p in curve.results)
        for point in curve.results:
            assert point.verified_acc <= certified.empirical_on_subset[f"{point.eps:g}"] <= certified.clean_acc + 1e-9
        assert curve.results[0].verified_acc == pytest.approx(certified.clean_acc)
    assert {c.name for c in certified.empirical} == {"pgd", "worst case"} and pgd[0.05] <= pgd[0.0]
    assert not [w for w in report.warnings if w.code.startswith("verified")]
    assert "certified vs empirical" in (tmp_path / "report.html").read_text()


def test_unknown_field_is_a_config_error():
    from defenses.certified.audit import parse_params

    with pytest.raises(ConfigError, match="unknown field 'steps'"):
        parse_params({"steps": 3})
    with pytest.raises(ConfigError, match="method"):
        parse_params({"methods": ["PGD"]})
