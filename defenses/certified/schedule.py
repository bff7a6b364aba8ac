"""The smoothed eps ramp of CROWN-IBP / auto_LiRPA's SmoothedScheduler: polynomial start, then linear to eps_max.

Growing eps as u^beta first keeps the early bounds tight (a linear ramp from 0 makes IBP training diverge more
often); from `mid` of the ramp on it continues linearly with the same slope, reaching eps_max at the end.
"""

from __future__ import annotations


def smoothed_eps(step: int, start: int, length: int, eps_max: float, beta: float = 4.0, mid: float = 0.25) -> float:
    """eps at `step`: 0 before `start`, eps_max from `start + length` on, smooth in between."""
    if length <= 0 or step >= start + length:
        return eps_max if step >= start else 0.0
    if step < start:
        return 0.0
    u = (step - start) / length
    # eps(u) = a u^beta for u < mid, then the tangent line at mid; a is chosen so that eps(1) = eps_max.
    a = eps_max / (mid**beta + beta * mid ** (beta - 1) * (1 - mid))
    if u < mid:
        return a * u**beta
    return a * (mid**beta + beta * mid ** (beta - 1) * (u - mid))
