"""The report section states the approximation settings and flags disagreeing variants."""

import torch

from mpc.audit import _variant as _audit_variant
from mpc.inference import Knobs, _result
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


def _section_of(private_logits: torch.Tensor, plain_logits: torch.Tensor) -> Section:
    """The audit's section for one variant whose parties returned `private_logits` (through the real result path)."""
    payload = {"wall": 1.0, "comm_time": 0.5, "rounds": 10, "bytes": 100, "by_op": {}}
    result = _result("model", plain_logits, [{**payload, "logits": None}, {**payload, "logits": private_logits}], Knobs())
    variant = _audit_variant(result, 0.9, plain_logits.argmax(1), None, None, min_agreement=0.99)
    return Section(parties=2, batch_size=len(plain_logits), private_weights=True, exp_iterations=8, reciprocal_iterations=10,
                   precision_bits=16, min_agreement=0.99, network_profiles={}, variants=[variant])


def test_wrong_private_outputs_always_raise_mpc_disagreement():
    plain = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    # Parties out of step give logits of ~1e14 whose argmax can still match on a small batch.
    noise_with_right_argmax = plain * 1e14
    wrong_argmax = plain[:, [1, 0, 2]]
    for private in (noise_with_right_argmax, wrong_argmax, torch.full_like(plain, float("nan"))):
        assert [w.code for w in _section_of(private, plain).validity_warnings()] == ["mpc_disagreement"], private
    assert _section_of(plain + 1e-3, plain).validity_warnings() == []
