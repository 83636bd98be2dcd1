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
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, x: np.ndarray) -> np.ndarray:
        """NCHW float32 into the first input; the first output back."""
        ...

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every input by name; every output, in graph order."""
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
        self.input_names = tuple(i.name for i in sess.get_inputs())
        self.output_names = tuple(o.name for o in sess.get_outputs())

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_feeds({self.input_names[0]: x})[0]

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        feed = {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()}
        return list(run_guarded(self._sess.run, None, feed))


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
        self._outputs = list(compiled.outputs)
        self.input_names = tuple(i.get_any_name() for i in compiled.inputs)
        self.output_names = tuple(o.get_any_name() for o in self._outputs)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_feeds({self.input_names[0]: x})[0]

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        feed = {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()}
        res = run_guarded(self._req.infer, feed)
        return [np.array(res[o], dtype=np.float32, copy=True) for o in self._outputs]


PROVIDERS: dict[str, Provider] = {p.name: p for p in (OnnxRuntimeCPU(), OpenVINO())}


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ProviderUnavailableError(f"unknown provider {name!r}; known: {', '.join(PROVIDERS)}") from None
