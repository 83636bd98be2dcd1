"""ncnn (Tencent, BSD-3) on the CPU, or on a GPU through Vulkan, running the zoo's original graphs.

The artifact is the original ``.param``/``.bin`` pair (target ``ncnn-fp32``), with a sidecar
:data:`CONTRACT_FILE` saying how the graph meets the model contract (border, scale,
residual): an ncnn graph cannot carry metadata. Where it is faster than OpenVINO it is
because of Winograd 3x3 convolution and bf16 storage, which help even CPUs without
AVX-512 (measured on AVX2: Compact 4.4 vs 6.4 us per input pixel).

Storage modes are rows of the capability table: ``fp32``, ``bf16`` (bf16 storage, fp32
arithmetic: any CPU) and ``fp16`` (fp16 storage and arithmetic: ARM CPUs with FP16 only;
elsewhere ncnn silently computes fp32, so that row needs the probe to report ``FP16``).

``ncnn:GPU`` runs the same graphs through Vulkan on any GPU with a Vulkan driver (AMD, Intel,
NVIDIA; Apple through MoltenVK), at fp32 or fp16 storage (bf16 is a CPU mode). It is offered
only for a hardware device: a CPU implementation of Vulkan (Mesa's lavapipe, SwiftShader) is
listed by the probe and never taken for a GPU. Automatic selection ranks it after the
accelerators that open the ONNX and before the CPU backends, at fp32 (the measured precision
rows cover CPU backends; ``--precision fp16`` asks for fp16 storage).
"""

from __future__ import annotations

import contextlib
import ctypes.util
import functools
import importlib.util
import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pixelift.errors import InferenceOutOfMemoryError, MissingExtraError, ProviderOptionError
from pixelift.providers.base import ProbeResult, ProviderError, Role, Session, default_threads
from pixelift.providers.machine import MachineFacts
from pixelift.providers.options import ProviderOptions, at_least, choice, parse

if TYPE_CHECKING:
    import numpy as np

    from pixelift.models import ncnn as ncnn_format

STORAGE = ("fp32", "bf16", "fp16")
#: beside ``model.param``: the contract and the graph's blob names
CONTRACT_FILE = "contract.json"
#: ncnn's layers return this when an allocation fails (ncnn/src/layer.h)
NCNN_OOM = -100
DEVICES = ("CPU", "GPU")
#: ncnn's GpuInfo.type()
VULKAN_KINDS = {0: "discrete", 1: "integrated", 2: "virtual", 3: "cpu"}
#: kinds that are not a GPU: a Vulkan driver that computes on the CPU (lavapipe, SwiftShader)
SOFTWARE_KINDS = frozenset({"cpu"})


@dataclass(frozen=True)
class VulkanDevice:
    index: int
    name: str
    kind: str

    @property
    def hardware(self) -> bool:
        return self.kind not in SOFTWARE_KINDS

    def __str__(self) -> str:
        return f"{self.index}: {self.name} ({self.kind})"


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """ncnn prints every Vulkan device it finds to the process's stderr (fd 2) when it creates its
    instance: not for a user's terminal."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a detached service): nothing to hide
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _vulkan_loader() -> bool:
    """Whether a Vulkan loader is installed; without one ncnn prints dlopen failures."""
    if sys.platform == "darwin":  # ncnn's macOS wheels carry MoltenVK
        return True
    return ctypes.util.find_library("vulkan-1" if sys.platform == "win32" else "vulkan") is not None


@functools.cache
def vulkan_devices() -> tuple[VulkanDevice, ...]:
    """The Vulkan devices ncnn sees (creating its Vulkan instance: once per process, so stderr is
    silenced once, not under a service's other threads on every probe)."""
    if not _vulkan_loader():
        return ()
    import ncnn

    with _quiet_stderr():
        count = ncnn.get_gpu_count()
        infos = [ncnn.get_gpu_info(i) for i in range(count)]
    return tuple(
        VulkanDevice(i, str(g.device_name()), VULKAN_KINDS.get(int(g.type()), "unknown")) for i, g in enumerate(infos)
    )


def default_gpu() -> int | None:
    """The first hardware Vulkan device's index (ncnn lists discrete GPUs first); None: there is none."""
    return next((d.index for d in vulkan_devices() if d.hardware), None)


class NcnnNet:
    """An ncnn graph loaded once, for repeated runs (the provider's session, the parity
    oracle and the bench peer). fp32 unless ``storage`` says otherwise: the oracle must not
    be blurred by ncnn's reduced-precision storage."""

    def __init__(
        self, param: Path, binf: Path, *, threads: int = 2, storage: str = "fp32", gpu: int | None = None
    ) -> None:
        """``gpu``: the Vulkan device to run on (None: the CPU)."""
        try:
            import ncnn
        except ImportError as exc:
            raise MissingExtraError("ncnn is not installed: pip install 'pixelift[ncnn]'") from exc
        if storage not in STORAGE:
            raise ValueError(f"storage must be one of {STORAGE}")
        if gpu is not None and storage == "bf16":
            raise ProviderOptionError("ncnn storage=bf16 is a CPU mode; on a GPU: fp32 or fp16")
        self._ncnn = ncnn
        from pixelift.models import ncnn as ncnn_format  # numpy: imported when a net opens

        self.graph = ncnn_format.parse_param(param.read_text(), source=str(param))
        self.net = ncnn.Net()
        opt = self.net.opt
        opt.use_vulkan_compute = gpu is not None
        opt.num_threads = threads
        fp16 = storage == "fp16"
        opt.use_fp16_packed = opt.use_fp16_storage = opt.use_fp16_arithmetic = fp16
        opt.use_bf16_storage = storage == "bf16"
        if gpu is not None:
            count = len(vulkan_devices())
            if not 0 <= gpu < count:
                raise ProviderError(f"ncnn: no Vulkan device {gpu} (found {count})")
            with _quiet_stderr():
                self.net.set_vulkan_device(gpu)
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(binf)) != 0:
            raise ProviderError(f"ncnn failed to load {param}")

    def run(self, chw: np.ndarray) -> np.ndarray:
        """One CHW float32 image through the graph; a CHW float32 copy back."""
        import numpy as np

        # ncnn.Mat(array) does not copy: keep `src` alive until extract() returns
        src = np.ascontiguousarray(chw, dtype=np.float32)
        mat_in = self._ncnn.Mat(src)
        ex = self.net.create_extractor()
        ex.input(self.graph.input_blob, mat_in)
        ret, mat_out = ex.extract(self.graph.output_blob)
        if ret == NCNN_OOM:
            del mat_out, ex, mat_in
            raise InferenceOutOfMemoryError(f"out of memory during inference (ncnn, input {tuple(chw.shape)})")
        if ret != 0:
            del mat_out, ex, mat_in
            raise ProviderError(f"ncnn extract failed with code {ret}")
        out = np.array(mat_out, dtype=np.float32, copy=True)
        # free in this order, or ncnn aborts with "pool allocator destroyed too early"
        del mat_out, ex, mat_in
        return out

    def close(self) -> None:
        self.net.clear()

    def __enter__(self) -> NcnnNet:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_contract(folder: Path, contract: ncnn_format.Contract, model_id: str) -> Path:
    path = folder / CONTRACT_FILE
    body = {"model_id": model_id, "scale": contract.scale, "border": contract.border, "residual": contract.residual}
    path.write_text(json.dumps(body, indent=1, sort_keys=True))
    return path


def read_contract(param: Path) -> ncnn_format.Contract:
    from pixelift.models import ncnn as ncnn_format

    path = param.with_name(CONTRACT_FILE)
    try:
        d = json.loads(path.read_text())
        return ncnn_format.Contract(int(d["scale"]), int(d["border"]), d.get("residual"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProviderError(f"{path}: not a readable ncnn contract ({exc}); rebuild: pixelift export --force") from exc


@dataclass(frozen=True)
class NcnnOptions(ProviderOptions):
    provider: ClassVar[str] = "ncnn"
    device: str = choice("CPU", DEVICES)
    threads: int | None = at_least(None, 1)  # None: the CPUs this process may use
    storage: str = choice("fp32", STORAGE)
    #: the Vulkan device index for device GPU (``pixelift doctor`` lists them); None: the first GPU
    gpu: int | None = at_least(None, 0)


class NcnnSession:
    """NCHW in, NCHW out, like every session: the contract (pad, run, crop) is applied here,
    one image of the batch at a time."""

    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("output",)

    def __init__(
        self, net: NcnnNet, contract: ncnn_format.Contract, provider: str = "ncnn", device_memory: int | None = None
    ) -> None:
        self._net, self._contract, self.provider = net, contract, provider
        self.device_memory = device_memory  # the Vulkan heap budget on a GPU (providers.base.device_memory)
        self._lock = threading.Lock()  # one extraction at a time: each uses every thread already

    def run(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4:
            raise ProviderError(f"ncnn session takes NCHW input, not shape {x.shape}")
        import numpy as np

        with self._lock:
            outs = [self._contract.apply(self._net.run, x[i]) for i in range(x.shape[0])]
        return outs[0][None] if len(outs) == 1 else np.stack(outs)

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if set(feeds) != {"input"}:
            raise ProviderError(f"ncnn graphs take one image input, not {', '.join(feeds)}")
        return [self.run(feeds["input"])]


class NcnnProvider:
    name = "ncnn"
    role = Role.CPU
    devices: tuple[str, ...] = ("GPU",)
    accelerator_devices: tuple[str, ...] = ("GPU",)  # ranked after the accelerators that open ONNX
    options_type: type[ProviderOptions] = NcnnOptions
    suffixes: tuple[str, ...] = (".param",)

    def probe(self, facts: MachineFacts) -> ProbeResult:
        if importlib.util.find_spec("ncnn") is None:
            return ProbeResult(False, "ncnn is not installed: pip install 'pixelift[ncnn]'")
        import ncnn

        from pixelift.versions import installed_version

        caps = ("FP32", "BF16_STORAGE", *(("FP16",) if ncnn.cpu_support_arm_asimdhp() else ()))
        # None: a build installed under another name
        version = installed_version("ncnn") or getattr(ncnn, "__version__", "(version unknown)")
        vulkan = vulkan_devices()
        gpus = [d for d in vulkan if d.hardware]
        if gpus:
            where = f"; Vulkan GPU {gpus[0]}"
        elif vulkan:
            where = f"; no Vulkan GPU ({', '.join(map(str, vulkan))}: a CPU implementation, not offered)"
        else:
            where = "; no Vulkan device" + ("" if _vulkan_loader() else " (no Vulkan loader)")
        return ProbeResult(
            True,
            f"ncnn {version} CPU on {facts.cpu_count} threads{where}",
            ("GPU",) if gpus else (),
            {"vulkan": [str(d) for d in vulkan]} if vulkan else {},
            caps,
        )

    def open(self, model_path: Path, options: ProviderOptions | None = None) -> Session:
        o = parse(NcnnOptions, options)
        if model_path.suffix != ".param":
            raise ProviderError(f"ncnn runs .param graphs (the ncnn-fp32 artifact), not {model_path.name}")
        if o.device == "CPU" and o.gpu is not None:
            raise ProviderOptionError("ncnn option gpu names a Vulkan device: use it with --provider ncnn:GPU")
        gpu = None
        if o.device == "GPU":
            gpu = o.gpu if o.gpu is not None else default_gpu()
            if gpu is None:
                raise ProviderError("ncnn: no Vulkan GPU here (pixelift doctor lists the Vulkan devices)")
        contract = read_contract(model_path)
        net = NcnnNet(
            model_path,
            model_path.with_suffix(".bin"),
            threads=o.threads or default_threads(),
            storage=o.storage,
            gpu=gpu,
        )
        if gpu is None:
            return NcnnSession(net, contract)
        import ncnn

        heap = int(ncnn.get_gpu_device(gpu).get_heap_budget()) << 20  # ncnn reports MB
        return NcnnSession(net, contract, "ncnn:GPU", heap)
