"""Which CPU backend is faster for this model on this machine? Measured once, then cached.

The cache lives in ``$PIXELIFT_HOME/providers/cpu-choice.json``, keyed by the artifact's
sha256 and the machine fingerprint, so new hardware or a new artifact measures again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixelift.paths import atomic_write_bytes, writable

log = logging.getLogger(__name__)

RUNS = 3


@dataclass(frozen=True)
class CpuChoice:
    winner: str
    seconds: dict[str, float]
    measured: bool  # False when read from the cache

    def reason(self) -> str:
        times = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in sorted(self.seconds.items(), key=lambda kv: kv[1]))
        return f"{'measured' if self.measured else 'cached measurement'}: {times} per tile"


def cache_file() -> Path:
    return writable("providers") / "cpu-choice.json"


def _load() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(cache_file().read_text())
        return data
    except (OSError, ValueError):
        return {}


def time_session(session: Any, x: np.ndarray, runs: int = RUNS) -> float:
    """The fastest of ``runs`` timed runs after a warm-up: other processes only ever add time,
    so the minimum is the estimate a busy machine disturbs least (a median measured under load
    once ranked onnxruntime above OpenVINO for SPAN, 38.8 vs 33.1 ms when re-measured quietly)."""
    session.run(x)  # warm-up: first runs pay for allocation and compilation
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(x)
        times.append(time.perf_counter() - t0)
    return min(times)


def faster_cpu_backend(
    model_path: Path, artifact_sha: str, fingerprint: str, x: np.ndarray, opener: Any, contenders: tuple[str, ...]
) -> CpuChoice:
    """``opener(name) -> Session``; returns the fastest of ``contenders`` (the CPU backends)."""
    key = f"{artifact_sha}:{fingerprint}:{'x'.join(map(str, x.shape))}"
    cached = _load().get(key)
    if cached and cached.get("winner") in contenders:
        return CpuChoice(cached["winner"], cached["seconds"], measured=False)
    seconds: dict[str, float] = {}
    for name in contenders:
        try:
            seconds[name] = time_session(opener(name), x)
        except Exception as exc:  # a backend that cannot run loses the contest
            log.warning("cpu micro-benchmark: %s failed: %s", name, exc)
    if not seconds:
        return CpuChoice(contenders[-1], {}, measured=True)
    winner = min(seconds, key=lambda k: seconds[k])
    data = _load()
    data[key] = {"winner": winner, "seconds": seconds}
    atomic_write_bytes(cache_file(), json.dumps(data, indent=1, sort_keys=True).encode())
    return CpuChoice(winner, seconds, measured=True)
