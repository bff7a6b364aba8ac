"""The report section states the approximation settings and flags disagreeing variants."""

from secsuite.sections.mpc import OpCost, Section, Variant, markdown


def _variant(name: str, agreement: float, error: float | None) -> Variant:
    return Variant(name=name, clean_acc=0.9, private_acc=0.9, argmax_agreement=agreement, max_abs_logit_error=error,
                   agrees=agreement >= 0.99, bytes=10**6, bytes_per_party=[5 * 10**5] * 2, rounds=100, wall_time_s=0.5,
                   compute_s=0.4, modelled_latency_s={"lan": 0.6}, by_op={"layernorm": OpCost(rounds=100, bytes=10, calls=5, seconds=0.3)})


def test_section_reports_calibration_and_disagreement():
    section = Section(parties=2, batch_size=16, private_weights=True, exp_iterations=8, reciprocal_iterations=10, precision_bits=16,
                      sqrt_iterations=5, calibrated=True, min_agreement=0.99, network_profiles={},
                      variants=[_variant("scale+quad", 1.0, 0.02), _variant("softmax+gelu", 0.25, None)])
    text = markdown(section)
    assert "inv_sqrt iterations 5" in text and "calibrated on training data" in text
    assert "0.250 (DISAGREES)" in text and "non-finite" in text
    warnings = section.validity_warnings()
    assert [(w.code, w.subject) for w in warnings] == [("mpc_disagreement", "softmax+gelu")]
    old = Section.model_validate({**section.model_dump(), "sqrt_iterations": 3, "calibrated": False})
    assert "not calibrated" in markdown(old)
