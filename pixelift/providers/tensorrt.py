"""onnxruntime-gpu's TensorRT execution provider.

TensorRT builds an engine per input shape unless it is given optimisation profiles:
we pass min/opt/max shapes that cover the tile sizes the runtime uses, and cache engines
on disk, so a new tile size does not trigger a rebuild.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pixelift.paths import writable
from pixelift.providers import ort
from pixelift.providers.base import ProbeResult, Role, Session
from pixelift.providers.cuda import EP as CUDA_EP
from pixelift.providers.cuda import cuda_options, probe_nvidia
from pixelift.providers.machine import MachineFacts
from pixelift.providers.options import ProviderOptions, at_least, parse

EP = "TensorrtExecutionProvider"


@dataclass(frozen=True)
class TensorRTOptions(ProviderOptions):
    provider: ClassVar[str] = "tensorrt"
    device_id: int = at_least(0, 0)
    fp16: bool = False


def _shape(batch: int, size: int) -> str:
    return f"input:{batch}x3x{size}x{size}"


def tensorrt_options(
    *,
    device_id: int = 0,
    fp16: bool = False,
    cache_dir: Path | None = None,
    min_tile: int = 32,
    opt_tile: int = 256,
    max_tile: int = 640,
    max_batch: int = 4,
) -> dict[str, str]:
    """TensorRT EP options by their documented names (trt_*)."""
    cache = cache_dir or writable("tensorrt")
    return ort.stringify(
        {
            "device_id": device_id,
            "trt_fp16_enable": fp16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_profile_min_shapes": _shape(1, min_tile),
            "trt_profile_opt_shapes": _shape(1, opt_tile),
            "trt_profile_max_shapes": _shape(max_batch, max_tile),
        }
    )


def tensorrt_libs_found() -> bool:
    if importlib.util.find_spec("tensorrt_libs") is not None or importlib.util.find_spec("tensorrt") is not None:
        return True
    return ctypes.util.find_library("nvinfer") is not None


class TensorRTProvider:
    name = "tensorrt"
    role = Role.ACCELERATOR
    devices: tuple[str, ...] = ()
    accelerator_devices: tuple[str, ...] = ()
    options_type: type[ProviderOptions] = TensorRTOptions
    suffixes: tuple[str, ...] = (".onnx",)

    def probe(self, facts: MachineFacts) -> ProbeResult:
        base = probe_nvidia(facts, EP, ort.build_eps())
        if not base.available:
            return base
        if not tensorrt_libs_found():
            return ProbeResult(False, "TensorRT libraries (libnvinfer) not found: pip install tensorrt", base.devices)
        return base

    def open(self, model_path: Path, options: ProviderOptions | None = None) -> Session:
        o = parse(TensorRTOptions, options)
        import onnxruntime as onnxrt

        device_id = o.device_id
        opts = tensorrt_options(device_id=device_id, fp16=o.fp16)

        def factory(path: str, sess_options: Any, providers: list[Any]) -> Any:
            # nodes TensorRT cannot take go to CUDA, then to the CPU
            chain = [providers[0], (CUDA_EP, cuda_options(device_id)), ort.CPU_EP]
            return onnxrt.InferenceSession(path, sess_options=sess_options, providers=chain)

        return ort.open_ort(model_path, self.name, EP, opts, factory=factory)
