"""onnxruntime's CoreML execution provider (macOS wheels), for Apple Silicon.

The CoreML EP hands graphs with dynamic input shapes back to the CPU
(onnxruntime#14212, #27696). Our artifacts have dynamic batch/height/width, so this
provider opens one session per tile shape, pinning the free dimensions by name
(``add_free_dimension_override_by_name``): CoreML then sees a static graph.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pixelift.paths import writable
from pixelift.providers import ort
from pixelift.providers.base import ProbeResult, Role, Session
from pixelift.providers.machine import MachineFacts
from pixelift.providers.options import ProviderOptions, choice, parse

EP = "CoreMLExecutionProvider"
COMPUTE_UNITS = {"ALL": "ALL", "CPU_AND_GPU": "CPUAndGPU", "CPU_AND_NE": "CPUAndNeuralEngine", "CPU_ONLY": "CPUOnly"}


def coreml_options(compute_units: str = "ALL", cache_dir: Path | None = None) -> dict[str, str]:
    """CoreML EP options by their documented names (the provider-options API)."""
    if compute_units not in COMPUTE_UNITS:
        raise ValueError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}")
    return ort.stringify(
        {
            "ModelFormat": "MLProgram",
            "MLComputeUnits": COMPUTE_UNITS[compute_units],
            "RequireStaticInputShapes": True,
            "ModelCacheDirectory": str(cache_dir or writable("coreml")),
        }
    )


class StaticShapeSession:
    """One onnxruntime session per input shape, created on first use and kept."""

    provider = "coreml"

    def __init__(self, model_path: Path, options: dict[str, str], opener: Any = None) -> None:
        self._path = model_path
        self._options = options
        self._open = opener or ort.open_ort
        self._sessions: dict[tuple[int, ...], ort.OrtSession] = {}
        self._lock = threading.Lock()
        first = self._for((1, 3, 64, 64))
        self.input_names = first.input_names
        self.output_names = first.output_names

    def _for(self, shape: tuple[int, ...]) -> ort.OrtSession:
        with self._lock:
            sess = self._sessions.get(shape)
            if sess is None:
                dims = {"batch": shape[0], "height": shape[2], "width": shape[3]}
                sess = self._open(self._path, self.provider, EP, self._options, free_dims=dims)
                self._sessions[shape] = sess
            return sess

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._for(tuple(x.shape)).run(x)

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        first = feeds[self.input_names[0]]
        return self._for(tuple(first.shape)).run_feeds(feeds)


@dataclass(frozen=True)
class CoreMLOptions(ProviderOptions):
    provider: ClassVar[str] = "coreml"
    compute_units: str = choice("ALL", COMPUTE_UNITS)


class CoreMLProvider:
    name = "coreml"
    role = Role.ACCELERATOR
    devices: tuple[str, ...] = ()
    accelerator_devices: tuple[str, ...] = ()
    options_type: type[ProviderOptions] = CoreMLOptions
    suffixes: tuple[str, ...] = (".onnx",)

    def probe(self, facts: MachineFacts) -> ProbeResult:
        if not facts.apple_silicon:
            return ProbeResult(False, f"needs macOS on Apple Silicon (this is {facts.os} {facts.arch})")
        if EP not in ort.build_eps():
            return ProbeResult(False, "this onnxruntime build has no CoreMLExecutionProvider")
        return ProbeResult(True, f"CoreML on {facts.apple_chip or 'Apple Silicon'}", ("ALL",))

    def open(self, model_path: Path, options: ProviderOptions | None = None) -> Session:
        return StaticShapeSession(model_path, coreml_options(parse(CoreMLOptions, options).compute_units))
