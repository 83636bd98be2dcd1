"""Run an original ncnn model with the official ``ncnn`` package: the parity oracle.

The reference output follows the model contract of :class:`ModelSpec`: the input is
reflect-padded by ``spec.border`` on each side, run through the original graph, and
the result is centre-cropped to ``scale`` times the unpadded size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pixelift.errors import MissingExtraError
from pixelift.models import ncnn as ncnn_format
from pixelift.models.spec import ModelSpec


class NcnnNet:
    """An ncnn graph loaded once, for repeated runs (the oracle, and the bench peer).

    fp32 everywhere unless ``bf16_storage``: the oracle must not be blurred by ncnn's
    fp16/bf16 storage modes.
    """

    def __init__(self, param: Path, binf: Path, *, threads: int = 2, bf16_storage: bool = False) -> None:
        try:
            import ncnn
        except ImportError as exc:
            raise MissingExtraError("the ncnn oracle needs the 'ncnn' package: pip install ncnn") from exc
        self._ncnn = ncnn
        self.graph = ncnn_format.parse_param(param.read_text(), source=str(param))
        self.net = ncnn.Net()
        opt = self.net.opt
        opt.use_vulkan_compute = False
        opt.num_threads = threads
        opt.use_fp16_packed = opt.use_fp16_storage = opt.use_fp16_arithmetic = False
        opt.use_bf16_storage = bf16_storage
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(binf)) != 0:
            raise RuntimeError(f"ncnn failed to load {param}")

    def run(self, chw: np.ndarray) -> np.ndarray:
        """One CHW float32 image through the graph; a CHW float32 copy back."""
        # ncnn.Mat(array) does not copy: keep `src` alive until extract() returns.
        src = np.ascontiguousarray(chw, dtype=np.float32)
        mat_in = self._ncnn.Mat(src)
        ex = self.net.create_extractor()
        ex.input(self.graph.input_blob, mat_in)
        ret, mat_out = ex.extract(self.graph.output_blob)
        if ret != 0:
            raise RuntimeError(f"ncnn extract failed with code {ret}")
        out = np.array(mat_out, dtype=np.float32, copy=True)
        # Free in this order, or ncnn aborts with "pool allocator destroyed too early".
        del mat_out, ex, mat_in
        return out

    def close(self) -> None:
        self.net.clear()

    def __enter__(self) -> NcnnNet:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_ncnn(param: Path, binf: Path, chw: np.ndarray, *, threads: int = 2) -> np.ndarray:
    """Run one CHW float32 image through an ncnn graph, returning a CHW float32 copy."""
    with NcnnNet(param, binf, threads=threads) as net:
        return net.run(chw)


def contract_run(spec: ModelSpec, net: NcnnNet, chw: np.ndarray, *, postprocess: bool = True) -> np.ndarray:
    """``net`` on ``chw`` under the :class:`ModelSpec` contract (pad, run, crop, post-process).

    ``spec.options["ncnn_residual"] == "nearest"`` marks graphs (Real-CUGAN x4) that
    output a residual which their ncnn app adds to the nearest-upsampled input in a
    shader; ``postprocess`` applies that step, as the original app does.
    """
    b = spec.border
    _, h, w = chw.shape
    if h % spec.alignment or w % spec.alignment:
        raise ValueError(f"{spec.id}: input {h}x{w} is not a multiple of {spec.alignment}")
    padded = np.pad(chw, ((0, 0), (b, b), (b, b)), mode="reflect") if b else chw
    out = net.run(padded)
    oh, ow = h * spec.scale, w * spec.scale
    top, left = (out.shape[1] - oh) // 2, (out.shape[2] - ow) // 2
    if top < 0 or left < 0:
        raise RuntimeError(f"{spec.id}: ncnn output {out.shape} is smaller than {oh}x{ow}")
    out = out[:, top : top + oh, left : left + ow]
    if postprocess and spec.options.get("ncnn_residual") == "nearest":
        out = out + chw.repeat(spec.scale, axis=1).repeat(spec.scale, axis=2)
    return out


def reference(spec: ModelSpec, chw: np.ndarray, param: Path, binf: Path, *, postprocess: bool = True) -> np.ndarray:
    """The original model's output for ``chw`` under the :class:`ModelSpec` contract."""
    with NcnnNet(param, binf) as net:
        return contract_run(spec, net, chw, postprocess=postprocess)
