"""Repeat statistics shared by the bench's ratios: a ratio of two medians is only printed when
both sides' repeats agree with themselves."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

#: (max - min) / median of a side's repeats above which its median is not trusted
NOISE_SPREAD = 0.20


def spread(times: Sequence[float]) -> float:
    """(max - min) / median of repeated timings; 0 for fewer than two."""
    if len(times) < 2:
        return 0.0
    return (max(times) - min(times)) / statistics.median(times)


def trusted_ratio(peer: Sequence[float], ours: Sequence[float]) -> tuple[float | None, str | None]:
    """``median(peer) / median(ours)`` (> 1: pixelift faster), or None and why when either
    side's repeats spread by more than :data:`NOISE_SPREAD`."""
    noisy = [
        f"{name} spread {spread(t):.0%}" for name, t in (("peer", peer), ("pixelift", ours)) if spread(t) > NOISE_SPREAD
    ]
    if noisy:
        return None, f"machine too noisy for a ratio ({', '.join(noisy)} > {NOISE_SPREAD:.0%})"
    return statistics.median(peer) / statistics.median(ours), None
