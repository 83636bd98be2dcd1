"""Numeric parity between an exported artifact and its sources.

Every check compares two runs of the same real-image crop and records PSNR (dB, on
0..1 data) and max-abs error. A check passes at ``threshold_db``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pixelift.artifacts.manifest import ParityCheck as Check
from pixelift.metrics import max_abs, psnr
from pixelift.models.architectures import architecture, pack
from pixelift.models.spec import ModelSpec
from pixelift.samples import content_crop, to_chw

PARITY_DB = 60.0


def run_torch(module: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def runtime_available(name: str) -> bool:
    from pixelift.providers import get_provider, read_machine

    return get_provider(name).probe(read_machine()).available



def parity_size(spec: ModelSpec) -> tuple[int, int]:
    """A non-square test size; odd when the model takes any size."""
    if spec.alignment == 1:
        return 45, 37
    a = spec.alignment
    return a * (48 // a), a * (36 // a) if (36 // a) % 2 else a * (40 // a)


#: a model with a noise-map input is checked at a real operating point: this much Gaussian
#: noise (0..1 scale, fixed seed) on the crop, and the map's default level
PARITY_NOISE = 25 / 255


def parity_input(spec: ModelSpec) -> tuple[str, np.ndarray]:
    """A real crop as the model's graph input (extra inputs packed at their defaults)."""
    h, w = parity_size(spec)
    name = f"{'sample-photo' if spec.content == 'photo' else 'art'}-{h}x{w}"
    x = to_chw(content_crop(spec.content, h, w))[None]
    if architecture(spec.architecture).extra_inputs:
        noise = np.random.default_rng(0).normal(0.0, PARITY_NOISE, x.shape).astype(np.float32)
        x = np.clip(x + noise, 0.0, 1.0)
        name += f"+noise{round(PARITY_NOISE * 255)}"
    return name, pack(spec.architecture, x)


def compare(
    reference: str, ref: np.ndarray, candidate: str, cand: np.ndarray, image: str, threshold_db: float = PARITY_DB
) -> Check:
    if ref.shape != cand.shape:
        return Check.judged(reference, candidate, image, float("-inf"), float("inf"), threshold_db)
    # identical outputs are recorded as 200 dB (inf is not JSON)
    db = round(min(psnr(ref, cand), 200.0), 2)
    return Check.judged(reference, candidate, image, db, max_abs(ref, cand), threshold_db)


def run_artifact(
    model_path: Path, x: np.ndarray, provider: str, options: Mapping[str, Any] | None = None
) -> np.ndarray:
    from pixelift.providers import get_provider, provider_options

    return get_provider(provider).open(model_path, provider_options(provider, options)).run(x)


def report(checks: list[Check]) -> dict[str, Any]:
    return {"passed": all(c.passed for c in checks), "checks": [c.to_json() for c in checks]}
