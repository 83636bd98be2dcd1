"""OpenVINO's own runtime (not the onnxruntime-openvino wheel) on CPU, GPU or NPU."""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pixelift import limits
from pixelift.errors import TileShapeError
from pixelift.paths import prune_lru, writable
from pixelift.providers.base import ProbeResult, Role, Session, default_threads, run_guarded
from pixelift.providers.machine import MachineFacts
from pixelift.providers.options import ProviderOptions, at_least, choice, parse

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

PRECISIONS = ("f32", "bf16", "f16")
DEVICES = ("CPU", "GPU", "NPU")
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
#: pixelift's folder for OpenVINO's compiled models, kept within ``PIXELIFT_COMPILE_CACHE``
CACHE_FOLDER = "openvino-cache"


def openvino_config(
    device: str = "CPU",
    precision: str = "f32",
    performance_hint: str = "LATENCY",
    streams: int | None = None,
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Compile properties by their OpenVINO names. The compile cache is ``cache_dir``, else
    pixelift's own folder unless ``PIXELIFT_COMPILE_CACHE=0`` turns it off."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}")
    config: dict[str, Any] = {
        # OpenVINO silently runs bf16 on CPUs with avx512_bf16 unless told otherwise.
        "INFERENCE_PRECISION_HINT": precision,
        # THROUGHPUT made x4plus setup take 6.7 s against 1.4 s (shared/notes/cpu-baseline.md)
        "PERFORMANCE_HINT": performance_hint,
    }
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    elif limits.compile_cache_bytes() > 0:
        config["CACHE_DIR"] = str(writable(CACHE_FOLDER))
    if streams is not None:
        config["NUM_STREAMS"] = streams
    if device == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads or default_threads()
    return config


#: static-shape compilations kept per session. Measured at 256 px (bench/static_shapes.py):
#: a model reshaped to the tile's shape runs 1.03-1.11x the dynamic-shape model on bf16/fp16
#: rows and 1.41x on SPAN's NNCF int8 IR; the tiles of one image share one shape
STATIC_SHAPES = 4
#: a static compilation keeps its own activation buffers (ESRGAN at ~250 px: +640 MB each, so
#: four tile shapes held 2.9 GB), while the tile chooser budgets memory for one call: so only
#: one compilation above this many input pixels is kept; smaller ones (probes, timing crops,
#: small photos) share the remaining places
STATIC_LARGE_PIXELS = 128 * 128
#: the CPU plugin's bf16 kernels (AMX) run some input widths far slower than their neighbours,
#: heights not at all. Microseconds per pixel of ``session.run`` at 256 rows (Sapphire Rapids, 2
#: threads): SPAN width 704 0.76, 711 1.23, 719 1.53; Compact 704 0.82, 719 2.58; ESRGAN (96
#: rows) 704 22.6, 719 76.9. Every multiple of 16 measured (640-768) ran at the fast rate; fp32
#: showed no such spread. So a bf16 session pads an input's width (reflect) to a multiple of
#: this and crops the output: at most 15 columns more
BF16_WIDTH_MULTIPLE = 16


class OvSession:
    """Up to ``static_shapes`` compilations reshaped to the input shapes seen (least recently
    used evicted, and at most one above :data:`STATIC_LARGE_PIXELS`), and a dynamic-shape one
    for what they cannot run; 0 keeps only the dynamic one.

    The dynamic compilation waits until something needs it (a static one that failed, several
    inputs, ``static_shapes=0``): a photo that fits one tile compiles one model, not two (0.03 s
    of a 0.25 MP photo's start on a Sapphire Rapids core, from OpenVINO's cache). A graph that
    does not compile still fails before it is trusted: selection's first run compiles it."""

    def __init__(
        self,
        core: Any,
        model_path: Path,
        device: str,
        config: dict[str, Any],
        provider: str = "openvino",
        static_shapes: int = STATIC_SHAPES,
        cache_budget: int | None = None,
    ) -> None:
        self.provider = provider
        self._core, self._path, self._device, self._config = core, model_path, device, config
        self._cache_budget = cache_budget  # None: the compile cache is not pixelift's to trim
        self._model = core.read_model(str(model_path))
        self.input_names = tuple(i.get_any_name() for i in self._model.inputs)
        self.output_names = tuple(o.get_any_name() for o in self._model.outputs)
        self._static: OrderedDict[tuple[int, ...], tuple[Any, list[Any]]] = OrderedDict()
        self._static_max = static_shapes if len(self.input_names) == 1 else 0
        self._dynamic_request: tuple[Any, list[Any]] | None = None
        bf16_cpu = device == "CPU" and config.get("INFERENCE_PRECISION_HINT") == "bf16"
        self.width_multiple = BF16_WIDTH_MULTIPLE if bf16_cpu and len(self.input_names) == 1 else 1
        # an infer request runs one call at a time (each uses every thread already), and the
        # reshaped model is shared: a service's concurrent jobs on one session take turns
        self._lock = threading.Lock()
        if self._static_max <= 0:
            self._dynamic()

    def _compile(self, model: Any) -> Any:
        compiled = self._core.compile_model(model, self._device, self._config)
        folder = self._config.get("CACHE_DIR")
        if folder and self._cache_budget is not None:
            # OpenVINO recompiles over a cache file that is gone or damaged, so another
            # process trimming the same folder at once costs a compile, never a failure
            freed = prune_lru(Path(folder), self._cache_budget)
            if freed:
                log.info("openvino: compile cache trimmed: %.1f MB least recently used removed", freed / 1e6)
        return compiled

    def _dynamic(self) -> tuple[Any, list[Any]]:
        if self._dynamic_request is None:
            compiled = self._compile(self._core.read_model(str(self._path)))
            self._dynamic_request = (compiled.create_infer_request(), list(compiled.outputs))
        return self._dynamic_request

    def _request(self, shape: tuple[int, ...]) -> tuple[Any, list[Any]]:
        if self._static_max <= 0:
            return self._dynamic()
        got = self._static.get(shape)
        if got is not None:
            self._static.move_to_end(shape)
            return got
        if _pixels(shape) > STATIC_LARGE_PIXELS:  # freed before the new one allocates
            for old in [k for k in self._static if _pixels(k) > STATIC_LARGE_PIXELS]:
                del self._static[old]
        try:
            self._model.reshape({self.input_names[0]: list(shape)})
            compiled = self._compile(self._model)
        except Exception as exc:  # a graph that will not reshape still runs dynamic
            log.warning("openvino: static shape %s not compiled (%s); dynamic shapes from now on", shape, exc)
            self._static_max = 0
            return self._dynamic()
        if len(self._static) >= self._static_max:
            self._static.popitem(last=False)
        got = self._static[shape] = (compiled.create_infer_request(), list(compiled.outputs))
        return got

    def run(self, x: np.ndarray) -> np.ndarray:
        import numpy as np

        width = x.shape[-1]
        pad = -width % self.width_multiple if x.ndim == 4 else 0
        if not pad:
            return self.run_feeds({self.input_names[0]: x})[0]
        mode: Literal["reflect", "edge"] = "reflect" if pad < width else "edge"
        y = self.run_feeds({self.input_names[0]: np.pad(x, ((0, 0), (0, 0), (0, 0), (0, pad)), mode=mode)})[0]
        scale, rest = divmod(y.shape[-1], width + pad)
        if rest or not scale:  # not an image-to-image output: nothing to crop it by
            raise TileShapeError(f"openvino: output width {y.shape[-1]} is no multiple of the padded input's {width + pad}")
        return y[..., : width * scale]  # a view: the tiler weighs it in place, the caller copies it once

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import numpy as np

        feed = {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()}
        with self._lock:
            req, outputs = self._request(tuple(next(iter(feed.values())).shape)) if len(feed) == 1 else self._dynamic()
            res = run_guarded(req.infer, feed)
            return [np.array(res[o], dtype=np.float32, copy=True) for o in outputs]


def _pixels(shape: tuple[int, ...]) -> int:
    return shape[-1] * shape[-2] if len(shape) >= 2 else 0


@dataclass(frozen=True)
class OpenVINOOptions(ProviderOptions):
    provider: ClassVar[str] = "openvino"
    device: str = choice("CPU", DEVICES)
    static_shapes: int = at_least(STATIC_SHAPES, 0)
    precision: str = choice("f32", PRECISIONS)
    performance_hint: str = choice("LATENCY", PERFORMANCE_HINTS)
    streams: int | None = at_least(None, 1)
    threads: int | None = at_least(None, 1)
    cache_dir: Path | None = None


#: what ``import openvino`` imports eagerly that running a model never needs: the model
#: converter, whose own import starts OpenVINO's telemetry (it reads the installed packages,
#: writes ``~/intel/stats`` and may fork a sender process): 0.03-0.06 s of every start, and a
#: side effect a probe must not have
_CONVERTER = "openvino.tools.ovc"


class _SkipConverter(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name == _CONVERTER:
            raise ModuleNotFoundError(f"{name} is imported when first used", name=name)
        return None


def _convert_model(*args: Any, **kwargs: Any) -> Any:
    """``openvino.convert_model``, importing the converter on first use."""
    from openvino.tools.ovc import convert_model

    return convert_model(*args, **kwargs)


_IMPORT_LOCK = threading.Lock()


def import_openvino() -> ModuleType:
    """``openvino``, without importing its model converter until something converts a model
    (``openvino.convert_model`` then imports it: its package tolerates the converter's absence).
    Thread-safe: a caller never sees the package half initialised by another thread's import."""
    with _IMPORT_LOCK:
        if "openvino" not in sys.modules:
            skip = _SkipConverter()
            sys.meta_path.insert(0, skip)
            try:
                import openvino
            finally:
                sys.meta_path.remove(skip)
        import openvino  # an import already in progress elsewhere finishes first
    module: ModuleType = openvino
    if not hasattr(module, "convert_model"):
        setattr(module, "convert_model", _convert_model)  # noqa: B010 - a name the package usually defines
    return module


@functools.cache
def _core() -> Any:
    """One ``ov.Core`` per process, shared by the probe and every session (creating one reads the
    plugin registry, a noticeable part of a small photo's start-up)."""
    return import_openvino().Core()


class OpenVINOProvider:
    name = "openvino"
    #: its compiled models under the cache home, trimmed to ``PIXELIFT_COMPILE_CACHE`` (doctor reports it)
    cache_folder = CACHE_FOLDER
    role = Role.CPU
    devices: tuple[str, ...] = DEVICES
    accelerator_devices: tuple[str, ...] = ("GPU", "NPU")  # ranked above the CPU backends when present
    options_type: type[ProviderOptions] = OpenVINOOptions
    suffixes: tuple[str, ...] = (".onnx", ".xml")

    def probe(self, facts: MachineFacts) -> ProbeResult:
        if importlib.util.find_spec("openvino") is None:
            return ProbeResult(False, "openvino is not installed: pip install 'pixelift[openvino]'")
        ov = import_openvino()
        core = _core()
        devices = tuple(core.available_devices)
        names = {d: str(core.get_property(d, "FULL_DEVICE_NAME")) for d in devices}
        caps = tuple(str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")) if "CPU" in devices else ()
        return ProbeResult(
            True, f"openvino {ov.get_version().split('-')[0]}: {', '.join(devices)}", devices, {"names": names}, caps
        )

    def open(self, model_path: Path, options: ProviderOptions | None = None) -> Session:
        o = parse(OpenVINOOptions, options)

        config = openvino_config(o.device, o.precision, o.performance_hint, o.streams, o.threads, o.cache_dir)
        label = f"openvino:{o.device}" if o.device != "CPU" else "openvino"
        budget = None if o.cache_dir is not None else limits.compile_cache_bytes()
        return OvSession(_core(), model_path, o.device, config, label, o.static_shapes, budget)
