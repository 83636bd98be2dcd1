"""Numeric parity between an exported artifact and its sources.

Every check compares two runs of the same real-image crop and records PSNR (dB, on
0..1 data) and max-abs error. A check passes at ``threshold_db``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixelift.metrics import max_abs, psnr
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



@dataclass(frozen=True)
class Check:
    reference: str
    candidate: str
    image: str
    psnr_db: float
    max_abs: float
    threshold_db: float

    @property
    def passed(self) -> bool:
        return self.psnr_db >= self.threshold_db

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def parity_size(spec: ModelSpec) -> tuple[int, int]:
    """A non-square test size; odd when the model takes any size."""
    if spec.alignment == 1:
        return 45, 37
    a = spec.alignment
    return a * (48 // a), a * (36 // a) if (36 // a) % 2 else a * (40 // a)


def parity_input(spec: ModelSpec) -> tuple[str, np.ndarray]:
    h, w = parity_size(spec)
    name = f"{'sample-photo' if spec.content == 'photo' else 'art'}-{h}x{w}"
    return name, to_chw(content_crop(spec.content, h, w))[None]


def compare(
    reference: str, ref: np.ndarray, candidate: str, cand: np.ndarray, image: str, threshold_db: float = PARITY_DB
) -> Check:
    if ref.shape != cand.shape:
        return Check(reference, candidate, image, float("-inf"), float("inf"), threshold_db)
    return Check(reference, candidate, image, round(psnr(ref, cand), 2), max_abs(ref, cand), threshold_db)


def run_artifact(model_path: Path, x: np.ndarray, provider: str, **options: Any) -> np.ndarray:
    from pixelift.providers import get_provider

    return get_provider(provider).open(model_path, **options).run(x)


def report(checks: list[Check]) -> dict[str, Any]:
    return {"passed": all(c.passed for c in checks), "checks": [c.to_dict() for c in checks]}
