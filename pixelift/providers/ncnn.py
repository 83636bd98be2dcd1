"""ncnn (Tencent, BSD-3) on the CPU, running the zoo's original graphs.

The artifact is the original ``.param``/``.bin`` pair (target ``ncnn-fp32``), with a sidecar
:data:`CONTRACT_FILE` saying how the graph meets the model contract (border, scale,
residual): an ncnn graph cannot carry metadata. Where it is faster than OpenVINO it is
because of Winograd 3x3 convolution and bf16 storage, which help even CPUs without
AVX-512 (measured on AVX2: Compact 4.4 vs 6.4 us per input pixel).

Storage modes are rows of the capability table: ``fp32``, ``bf16`` (bf16 storage, fp32
arithmetic: any CPU) and ``fp16`` (fp16 storage and arithmetic: ARM CPUs with FP16 only;
elsewhere ncnn silently computes fp32, so that row needs the probe to report ``FP16``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pixelift.errors import InferenceOutOfMemoryError, MissingExtraError
from pixelift.models import ncnn as ncnn_format
from pixelift.providers.base import ProbeResult, ProviderError, Role, Session, default_threads
from pixelift.providers.machine import MachineFacts
from pixelift.providers.options import ProviderOptions, at_least, choice, parse

STORAGE = ("fp32", "bf16", "fp16")
#: beside ``model.param``: the contract and the graph's blob names
CONTRACT_FILE = "contract.json"
#: ncnn's layers return this when an allocation fails (ncnn/src/layer.h)
NCNN_OOM = -100


class NcnnNet:
    """An ncnn graph loaded once, for repeated runs (the provider's session, the parity
    oracle and the bench peer). fp32 unless ``storage`` says otherwise: the oracle must not
    be blurred by ncnn's reduced-precision storage."""

    def __init__(self, param: Path, binf: Path, *, threads: int = 2, storage: str = "fp32") -> None:
        try:
            import ncnn
        except ImportError as exc:
            raise MissingExtraError("ncnn is not installed: pip install 'pixelift[ncnn]'") from exc
        if storage not in STORAGE:
            raise ValueError(f"storage must be one of {STORAGE}")
        self._ncnn = ncnn
        self.graph = ncnn_format.parse_param(param.read_text(), source=str(param))
        self.net = ncnn.Net()
        opt = self.net.opt
        opt.use_vulkan_compute = False
        opt.num_threads = threads
        fp16 = storage == "fp16"
        opt.use_fp16_packed = opt.use_fp16_storage = opt.use_fp16_arithmetic = fp16
        opt.use_bf16_storage = storage == "bf16"
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(binf)) != 0:
            raise ProviderError(f"ncnn failed to load {param}")

    def run(self, chw: np.ndarray) -> np.ndarray:
        """One CHW float32 image through the graph; a CHW float32 copy back."""
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
    path = param.with_name(CONTRACT_FILE)
    try:
        d = json.loads(path.read_text())
        return ncnn_format.Contract(int(d["scale"]), int(d["border"]), d.get("residual"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProviderError(f"{path}: not a readable ncnn contract ({exc}); rebuild: pixelift export --force") from exc


@dataclass(frozen=True)
class NcnnOptions(ProviderOptions):
    provider: ClassVar[str] = "ncnn"
    threads: int | None = at_least(None, 1)  # None: the CPUs this process may use
    storage: str = choice("fp32", STORAGE)


class NcnnSession:
    """NCHW in, NCHW out, like every session: the contract (pad, run, crop) is applied here,
    one image of the batch at a time."""

    provider = "ncnn"
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("output",)

    def __init__(self, net: NcnnNet, contract: ncnn_format.Contract) -> None:
        self._net, self._contract = net, contract
        self._lock = threading.Lock()  # one extraction at a time: each uses every thread already

    def run(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4:
            raise ProviderError(f"ncnn session takes NCHW input, not shape {x.shape}")
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
    devices: tuple[str, ...] = ()
    accelerator_devices: tuple[str, ...] = ()
    options_type: type[ProviderOptions] = NcnnOptions
    suffixes: tuple[str, ...] = (".param",)

    def probe(self, facts: MachineFacts) -> ProbeResult:
        if importlib.util.find_spec("ncnn") is None:
            return ProbeResult(False, "ncnn is not installed: pip install 'pixelift[ncnn]'")
        import ncnn

        caps = ("FP32", "BF16_STORAGE", *(("FP16",) if ncnn.cpu_support_arm_asimdhp() else ()))
        try:
            version = importlib.metadata.version("ncnn")
        except importlib.metadata.PackageNotFoundError:  # a build installed under another name
            version = getattr(ncnn, "__version__", "(version unknown)")
        return ProbeResult(True, f"ncnn {version} CPU on {facts.cpu_count} threads", ("CPU",), {}, caps)

    def open(self, model_path: Path, options: ProviderOptions | None = None) -> Session:
        o = parse(NcnnOptions, options)
        if model_path.suffix != ".param":
            raise ProviderError(f"ncnn runs .param graphs (the ncnn-fp32 artifact), not {model_path.name}")
        contract = read_contract(model_path)
        net = NcnnNet(
            model_path, model_path.with_suffix(".bin"), threads=o.threads or default_threads(), storage=o.storage
        )
        return NcnnSession(net, contract)
