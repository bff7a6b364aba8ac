"""Private inference with CrypTen, MPC-friendly layers, MPCViT search and a latency model."""

from mpc.calibration import calibrate
from mpc.cost import PROFILES, NetworkProfile, modelled_latency
from mpc.inference import Knobs, PartyError, PrivateResult, private_inference, private_inference_many
from mpc.layers import HeadMixAttention, fine_tune, to_variant

__all__ = [
    "PROFILES", "HeadMixAttention", "calibrate", "Knobs", "NetworkProfile", "PartyError", "PrivateResult", "fine_tune",
    "modelled_latency", "private_inference", "private_inference_many", "to_variant",
]
