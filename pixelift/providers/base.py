"""Provider protocol and registry."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pixelift.errors import InferenceOutOfMemoryError, PixeliftError

# Neither onnxruntime nor OpenVINO has a typed out-of-memory exception; these are the
# messages their allocators raise (std::bad_alloc, the ORT arena, CUDA's allocator).
OOM_MARKERS = ("bad_alloc", "failed to allocate memory", "out of memory", "cudaerrormemoryallocation")


def run_guarded(fn: Any, *args: Any) -> Any:
    """Call an inference function, turning an allocator failure into InferenceOutOfMemoryError."""
    try:
        return fn(*args)
    except MemoryError as exc:
        raise InferenceOutOfMemoryError(f"out of memory during inference: {exc}") from exc
    except Exception as exc:
        if any(m in str(exc).lower() for m in OOM_MARKERS):
            raise InferenceOutOfMemoryError(f"out of memory during inference: {exc}") from exc
        raise


@dataclass(frozen=True)
class ProbeResult:
    available: bool
    reason: str
    devices: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


class Session(Protocol):
    provider: str

    def run(self, x: np.ndarray) -> np.ndarray:
        """NCHW float32 in, NCHW float32 out."""
        ...


class Provider(Protocol):
    name: str

    def probe(self) -> ProbeResult: ...
    def open(self, model_path: Path, **options: Any) -> Session: ...


class ProviderUnavailableError(PixeliftError):
    pass


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class OnnxRuntimeCPU:
    name = "cpu"

    def probe(self) -> ProbeResult:
        if importlib.util.find_spec("onnxruntime") is None:
            return ProbeResult(False, "onnxruntime is not installed")
        return ProbeResult(True, "onnxruntime CPU execution provider is always available", ("CPU",))

    def open(self, model_path: Path, *, threads: int | None = None, **_: Any) -> Session:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or default_threads()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])
        return _OrtSession(sess)


class _OrtSession:
    provider = "cpu"

    def __init__(self, sess: Any) -> None:
        self._sess = sess
        self._input = sess.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        feed = {self._input: np.ascontiguousarray(x, np.float32)}
        return run_guarded(self._sess.run, None, feed)[0]


class OpenVINO:
    name = "openvino"

    def probe(self) -> ProbeResult:
        if importlib.util.find_spec("openvino") is None:
            return ProbeResult(False, "openvino is not installed (pip install 'pixelift[openvino]')")
        import openvino as ov

        devices = tuple(ov.Core().available_devices)
        return ProbeResult(True, f"openvino {ov.__version__} with devices {', '.join(devices)}", devices)

    def open(
        self,
        model_path: Path,
        *,
        device: str = "CPU",
        precision: str = "f32",
        threads: int | None = None,
        **_: Any,
    ) -> Session:
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {
            # OpenVINO silently runs bf16 on CPUs with avx512_bf16 unless told otherwise.
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
        }
        if device == "CPU":
            config["INFERENCE_NUM_THREADS"] = threads or default_threads()
        compiled = core.compile_model(core.read_model(str(model_path)), device, config)
        return _OvSession(compiled)


class _OvSession:
    provider = "openvino"

    def __init__(self, compiled: Any) -> None:
        self._req = compiled.create_infer_request()

    def run(self, x: np.ndarray) -> np.ndarray:
        res = run_guarded(self._req.infer, {0: np.ascontiguousarray(x, np.float32)})
        return np.asarray(next(iter(res.values())), dtype=np.float32).copy()


PROVIDERS: dict[str, Provider] = {p.name: p for p in (OnnxRuntimeCPU(), OpenVINO())}


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ProviderUnavailableError(f"unknown provider {name!r}; known: {', '.join(PROVIDERS)}") from None
