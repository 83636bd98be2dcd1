"""Provider protocol, probe results, sessions and typed errors."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pixelift.errors import InferenceOutOfMemoryError, PixeliftError
from pixelift.providers.machine import MachineFacts
from pixelift.providers.options import ProviderOptions

if TYPE_CHECKING:
    import numpy as np

# Neither onnxruntime nor OpenVINO has a typed out-of-memory exception; these are the
# messages their allocators raise (std::bad_alloc, the ORT arena, CUDA's allocator).
OOM_MARKERS = ("bad_alloc", "failed to allocate memory", "out of memory", "cudaerrormemoryallocation")


class ProviderError(PixeliftError):
    """No provider could run the model, or a strict request failed."""


class SilentFallbackError(ProviderError):
    """onnxruntime created the session on another execution provider than the one asked for."""


@dataclass(frozen=True)
class ProbeResult:
    available: bool
    reason: str
    devices: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    #: what the default device computes natively (OpenVINO CPU: FP32, BF16, INT8...); empty: not reported
    capabilities: tuple[str, ...] = ()


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


def device_memory(session: Session) -> int | None:
    """Bytes of activations a tile may take on the session's device, where it has memory of its
    own that the host's free memory does not measure (ncnn:GPU: the Vulkan heap budget); None
    for host memory. Sessions that have it set a ``device_memory`` attribute."""
    value = getattr(session, "device_memory", None)
    return value if isinstance(value, int) and value > 0 else None


class Role(StrEnum):
    """Where a provider stands in automatic selection."""

    ACCELERATOR = "accelerator"  # ranked above the CPU backends, in table order
    CPU = "cpu"  # a CPU backend: auto runs the measured faster one for each model
    EXPLICIT = "explicit"  # only when asked for by name (or through a capability row)


class Provider(Protocol):
    name: str
    role: Role
    #: devices a user can name as ``provider:DEVICE`` (e.g. ``openvino:GPU``)
    devices: tuple[str, ...]
    #: of those, the ones ranked as accelerators by automatic selection when present
    accelerator_devices: tuple[str, ...]
    #: the options ``open`` takes (a provider with ``devices`` has a ``device`` option)
    options_type: type[ProviderOptions]
    #: the model files it opens, by suffix (an ncnn graph is not an ONNX file): selection
    #: offers a provider only the files it can open
    suffixes: tuple[str, ...]

    def probe(self, facts: MachineFacts) -> ProbeResult:
        """Is the backend usable here? Cheap, no side effects, builds no session."""
        ...

    def open(self, model_path: Path, options: ProviderOptions | None = None) -> Session:
        """A session on ``model_path``; ``options`` must be this provider's ``options_type``
        (None: its defaults), else :class:`~pixelift.errors.ProviderOptionError`."""
        ...


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
