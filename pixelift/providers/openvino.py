"""OpenVINO's own runtime (not the onnxruntime-openvino wheel) on CPU, GPU or NPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from pixelift.paths import home
from pixelift.providers.base import ProbeResult, Session, default_threads, run_guarded
from pixelift.providers.machine import MachineFacts

PRECISIONS = ("f32", "bf16", "f16")


def openvino_config(
    device: str = "CPU",
    precision: str = "f32",
    performance_hint: str = "LATENCY",
    streams: int | None = None,
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Compile properties by their OpenVINO names."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}")
    config: dict[str, Any] = {
        # OpenVINO silently runs bf16 on CPUs with avx512_bf16 unless told otherwise.
        "INFERENCE_PRECISION_HINT": precision,
        # THROUGHPUT made x4plus setup take 6.7 s against 1.4 s (shared/notes/cpu-baseline.md)
        "PERFORMANCE_HINT": performance_hint,
        "CACHE_DIR": str(cache_dir or home() / "openvino-cache"),
    }
    if streams is not None:
        config["NUM_STREAMS"] = streams
    if device == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads or default_threads()
    return config


class OvSession:
    def __init__(self, compiled: Any, provider: str = "openvino") -> None:
        self.provider = provider
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


class OpenVINOProvider:
    name = "openvino"
    accelerator = False  # its GPU/NPU devices are ranked as accelerators by device, see select.py

    def probe(self, facts: MachineFacts) -> ProbeResult:
        if importlib.util.find_spec("openvino") is None:
            return ProbeResult(False, "openvino is not installed: pip install 'pixelift[openvino]'")
        import openvino as ov

        core = ov.Core()
        devices = tuple(core.available_devices)
        names = {d: str(core.get_property(d, "FULL_DEVICE_NAME")) for d in devices}
        return ProbeResult(
            True, f"openvino {ov.get_version().split('-')[0]}: {', '.join(devices)}", devices, {"names": names}
        )

    def open(self, model_path: Path, *, device: str = "CPU", **options: Any) -> Session:
        import openvino as ov

        core = ov.Core()
        config = openvino_config(device=device, **options)
        compiled = core.compile_model(core.read_model(str(model_path)), device, config)
        return OvSession(compiled, f"openvino:{device}" if device != "CPU" else "openvino")
