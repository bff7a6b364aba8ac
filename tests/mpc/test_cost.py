import pytest

from mpc.cost import PROFILES, NetworkProfile, modelled_latency


def test_latency_model_terms():
    profile = NetworkProfile("x", rtt_s=0.01, bandwidth_bytes_per_s=1000.0)
    assert profile.latency(1.0, 10, 2000) == pytest.approx(1.0 + 0.1 + 2.0)
    lat = modelled_latency(0.5, 100, 10**6)
    assert lat["wan"] > lat["lan"] > 0.5
    assert set(PROFILES) == {"lan", "wan"}


def test_profile_validation():
    with pytest.raises(ValueError, match="bandwidth"):
        NetworkProfile("bad", 0.1, 0)


def test_knobs_validate_and_reach_crypten_config():
    from types import SimpleNamespace

    from mpc.inference import Knobs

    with pytest.raises(ValueError, match="sqrt_iterations"):
        Knobs(sqrt_iterations=0)
    cfg = SimpleNamespace(functions=SimpleNamespace(), encoder=SimpleNamespace())
    Knobs(exp_iterations=5, reciprocal_iterations=7, precision_bits=20, sqrt_iterations=6).apply(cfg)
    assert (cfg.functions.exp_iterations, cfg.functions.reciprocal_nr_iters, cfg.encoder.precision_bits,
            cfg.functions.sqrt_nr_iters) == (5, 7, 20, 6)
