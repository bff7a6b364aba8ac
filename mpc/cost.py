"""Latency model for a 2-party run: compute + rounds x RTT + bytes / bandwidth, with named network profiles.

Measured runs happen on loopback, where RTT and bandwidth are nearly free; the model says what the
same protocol transcript would cost on a real network. Bytes are the total sent by all parties,
charged to one shared link (conservative for a full-duplex link, where it is at most 2x too high).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NetworkProfile:
    name: str
    rtt_s: float
    bandwidth_bytes_per_s: float

    def __post_init__(self):
        if self.rtt_s < 0:
            raise ValueError(f"rtt_s must be >= 0, got {self.rtt_s}")
        if self.bandwidth_bytes_per_s <= 0:
            raise ValueError(f"bandwidth_bytes_per_s must be > 0, got {self.bandwidth_bytes_per_s}")

    def latency(self, compute_s: float, rounds: int, total_bytes: int) -> float:
        return compute_s + rounds * self.rtt_s + total_bytes / self.bandwidth_bytes_per_s


# LAN: 1 Gbit/s, 0.5 ms RTT (one data centre); WAN: 100 Mbit/s, 40 ms RTT (cross-region), the
# settings most 2PC inference papers (Cheetah, MPCFormer, MPCViT) report under.
PROFILES: dict[str, NetworkProfile] = {
    "lan": NetworkProfile("lan", rtt_s=0.5e-3, bandwidth_bytes_per_s=1e9 / 8),
    "wan": NetworkProfile("wan", rtt_s=40e-3, bandwidth_bytes_per_s=100e6 / 8),
}


def modelled_latency(compute_s: float, rounds: int, total_bytes: int) -> dict[str, float]:
    """Latency in seconds under every named profile."""
    return {name: profile.latency(compute_s, rounds, total_bytes) for name, profile in PROFILES.items()}
