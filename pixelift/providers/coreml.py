"""onnxruntime's CoreML execution provider (macOS wheels), for Apple Silicon.

The CoreML EP hands graphs with dynamic input shapes back to the CPU
(onnxruntime#14212, #27696). Our artifacts have dynamic batch/height/width, so this
provider opens one session per tile shape, pinning the free dimensions by name
(``add_free_dimension_override_by_name``): CoreML then sees a static graph.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pixelift import limits
from pixelift.paths import prune_lru, writable
from pixelift.providers import ort
from pixelift.providers.base import ProbeResult, Role, Session
from pixelift.providers.machine import MachineFacts
from pixelift.providers.options import ProviderOptions, choice, parse

if TYPE_CHECKING:
    import numpy as np

EP = "CoreMLExecutionProvider"
COMPUTE_UNITS = {"ALL": "ALL", "CPU_AND_GPU": "CPUAndGPU", "CPU_AND_NE": "CPUAndNeuralEngine", "CPU_ONLY": "CPUOnly"}


#: pixelift's folder for CoreML's compiled models, kept within ``PIXELIFT_COMPILE_CACHE``
CACHE_FOLDER = "coreml"
#: sessions kept per model, one per tile shape, least recently used out: each holds a compiled
#: model, and a warm service sees photos of many sizes
MAX_SHAPES = 4


def coreml_options(compute_units: str = "ALL", cache_dir: Path | None = None) -> dict[str, str]:
    """CoreML EP options by their documented names (the provider-options API). Compiled models
    are cached in ``cache_dir``, else pixelift's folder unless ``PIXELIFT_COMPILE_CACHE=0``."""
    if compute_units not in COMPUTE_UNITS:
        raise ValueError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}")
    options: dict[str, object] = {
        "ModelFormat": "MLProgram",
        "MLComputeUnits": COMPUTE_UNITS[compute_units],
        "RequireStaticInputShapes": True,
    }
    if cache_dir is not None:
        options["ModelCacheDirectory"] = str(cache_dir)
    elif limits.compile_cache_bytes() > 0:
        options["ModelCacheDirectory"] = str(writable(CACHE_FOLDER))
    return ort.stringify(options)


class StaticShapeSession:
    """One onnxruntime session per input shape, created on first use; the :data:`MAX_SHAPES`
    most recently used are kept. ``cache_budget``: trim the compiled-model cache to it after
    each new shape (None: the folder is not pixelift's to trim)."""

    provider = "coreml"

    def __init__(
        self, model_path: Path, options: dict[str, str], opener: Any = None, cache_budget: int | None = None
    ) -> None:
        self._path = model_path
        self._options = options
        self._open = opener or ort.open_ort
        self._cache_budget = cache_budget
        self._sessions: OrderedDict[tuple[int, ...], ort.OrtSession] = OrderedDict()
        self._lock = threading.Lock()
        first = self._for((1, 3, 64, 64))
        self.input_names = first.input_names
        self.output_names = first.output_names

    def _for(self, shape: tuple[int, ...]) -> ort.OrtSession:
        with self._lock:
            sess = self._sessions.get(shape)
            if sess is not None:
                self._sessions.move_to_end(shape)
                return sess
            dims = {"batch": shape[0], "height": shape[2], "width": shape[3]}
            sess = self._open(self._path, self.provider, EP, self._options, free_dims=dims)
            if len(self._sessions) >= MAX_SHAPES:
                self._sessions.popitem(last=False)
            self._sessions[shape] = sess
            folder = self._options.get("ModelCacheDirectory")
            if folder and self._cache_budget is not None:
                prune_lru(Path(folder), self._cache_budget)
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
    #: its compiled models under the cache home, trimmed to ``PIXELIFT_COMPILE_CACHE`` (doctor reports it)
    cache_folder = CACHE_FOLDER
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
        opts = coreml_options(parse(CoreMLOptions, options).compute_units)
        return StaticShapeSession(model_path, opts, cache_budget=limits.compile_cache_bytes())
