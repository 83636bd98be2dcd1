"""onnxruntime-gpu's CUDA execution provider (NVIDIA GPUs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pixelift.providers import ort
from pixelift.providers.base import ProbeResult, Role, Session
from pixelift.providers.machine import MachineFacts
from pixelift.providers.options import ProviderOptions, at_least, choice, parse

EP = "CUDAExecutionProvider"
CONV_ALGO = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")


@dataclass(frozen=True)
class CudaOptions(ProviderOptions):
    provider: ClassVar[str] = "cuda"
    device_id: int = at_least(0, 0)
    memory_limit: int | None = at_least(None, 1)  # bytes; None: no limit
    conv_algo_search: str = choice("HEURISTIC", CONV_ALGO)


def cuda_options(
    device_id: int = 0, memory_limit: int | None = None, conv_algo_search: str = "HEURISTIC"
) -> dict[str, str]:
    """CUDA EP options by their documented names (OrtCUDAProviderOptions)."""
    if conv_algo_search not in CONV_ALGO:
        raise ValueError(f"conv_algo_search must be one of {CONV_ALGO}")
    return ort.stringify(
        {
            "device_id": device_id,
            "gpu_mem_limit": memory_limit,
            "arena_extend_strategy": "kSameAsRequested",  # tiles of one size: no power-of-two overshoot
            "cudnn_conv_algo_search": conv_algo_search,
            "do_copy_in_default_stream": True,
        }
    )


def probe_nvidia(facts: MachineFacts, ep: str, build_eps: tuple[str, ...]) -> ProbeResult:
    gpus = facts.nvidia_gpus
    if not gpus:
        return ProbeResult(False, "no NVIDIA GPU found (NVML and nvidia-smi report none)")
    names = tuple(f"{g.index}: {g.name} ({(g.memory_bytes or 0) >> 20} MiB)" for g in gpus)
    if ep not in build_eps:
        return ProbeResult(False, f"onnxruntime has no {ep}: pip install 'pixelift[gpu]' (onnxruntime-gpu)", names)
    return ProbeResult(True, f"{ep} with {len(gpus)} NVIDIA GPU(s)", names, {"gpus": [g.name for g in gpus]})


class CudaProvider:
    name = "cuda"
    role = Role.ACCELERATOR
    devices: tuple[str, ...] = ()
    accelerator_devices: tuple[str, ...] = ()
    options_type: type[ProviderOptions] = CudaOptions
    suffixes: tuple[str, ...] = (".onnx",)

    def probe(self, facts: MachineFacts) -> ProbeResult:
        return probe_nvidia(facts, EP, ort.build_eps())

    def open(self, model_path: Path, options: ProviderOptions | None = None) -> Session:
        o = parse(CudaOptions, options)
        return ort.open_ort(model_path, self.name, EP, cuda_options(o.device_id, o.memory_limit, o.conv_algo_search))
