"""Shared onnxruntime plumbing for the cpu, cuda, tensorrt and coreml providers."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixelift.providers.base import SilentFallbackError, default_threads, run_guarded

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"
GRAPH_OPTIMIZATION = ("disable", "basic", "extended", "all")


def installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def build_eps() -> tuple[str, ...]:
    """Execution providers compiled into the installed onnxruntime. This describes the
    build, not the hardware: onnxruntime-gpu lists CUDA on machines without a GPU."""
    if not installed():
        return ()
    import onnxruntime as ort

    return tuple(ort.get_available_providers())


class OrtSession:
    def __init__(self, sess: Any, provider: str) -> None:
        self._sess = sess
        self.provider = provider
        self.input_names = tuple(i.name for i in sess.get_inputs())
        self.output_names = tuple(o.name for o in sess.get_outputs())

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_feeds({self.input_names[0]: x})[0]

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import numpy as np

        feed = {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()}
        return list(run_guarded(self._sess.run, None, feed))


def session_options(threads: int | None, graph_optimization: str, free_dims: dict[str, int] | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    for dim, value in (free_dims or {}).items():
        so.add_free_dimension_override_by_name(dim, value)
    return so


def open_ort(
    model_path: Path,
    provider: str,
    ep: str,
    ep_options: dict[str, str],
    *,
    threads: int | None = None,
    graph_optimization: str = "all",
    free_dims: dict[str, int] | None = None,
    factory: Callable[..., Any] | None = None,
) -> OrtSession:
    """Create a session on ``ep`` and prove it: onnxruntime silently falls back to the CPU
    when an accelerator fails to load, so the active provider list is checked afterwards."""
    import onnxruntime as ort

    make = factory or ort.InferenceSession
    providers: list[Any] = [(ep, ep_options)] if ep == CPU_EP else [(ep, ep_options), CPU_EP]
    so = session_options(threads, graph_optimization, free_dims)
    sess = make(str(model_path), sess_options=so, providers=providers)
    active = list(sess.get_providers())
    if not active or active[0] != ep:
        raise SilentFallbackError(f"onnxruntime did not enable {ep} (active: {', '.join(active) or 'none'})")
    return OrtSession(sess, provider)


def stringify(options: dict[str, Any]) -> dict[str, str]:
    """onnxruntime provider options are strings; booleans become "1"/"0"."""
    out = {}
    for k, v in options.items():
        if v is None:
            continue
        out[k] = ("1" if v else "0") if isinstance(v, bool) else str(v)
    return out
