"""Run an original ncnn model with the official ``ncnn`` package: the parity oracle.

The reference output follows the model contract of :class:`ModelSpec`: the input is
reflect-padded by ``spec.border`` on each side, run through the original graph, and
the result is centre-cropped to ``scale`` times the unpadded size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pixelift.errors import MissingExtraError
from pixelift.models import ncnn as ncnn_format
from pixelift.models.spec import ModelSpec


def run_ncnn(param: Path, binf: Path, chw: np.ndarray, *, threads: int = 2) -> np.ndarray:
    """Run one CHW float32 image through an ncnn graph, returning a CHW float32 copy."""
    try:
        import ncnn
    except ImportError as exc:
        raise MissingExtraError("the ncnn oracle needs the 'ncnn' package: pip install ncnn") from exc
    graph = ncnn_format.parse_param(param.read_text(), source=str(param))
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    # fp32 everywhere: the oracle must not be blurred by ncnn's fp16/bf16 storage.
    net.opt.use_fp16_packed = False
    net.opt.use_fp16_storage = False
    net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    if net.load_param(str(param)) != 0 or net.load_model(str(binf)) != 0:
        raise RuntimeError(f"ncnn failed to load {param}")
    # ncnn.Mat(array) does not copy: keep `src` alive until extract() returns.
    src = np.ascontiguousarray(chw, dtype=np.float32)
    mat_in = ncnn.Mat(src)
    ex = net.create_extractor()
    ex.input(graph.input_blob, mat_in)
    ret, mat_out = ex.extract(graph.output_blob)
    if ret != 0:
        raise RuntimeError(f"ncnn extract failed with code {ret}")
    out = np.array(mat_out, dtype=np.float32, copy=True)
    # Free in this order, or ncnn aborts with "pool allocator destroyed too early".
    del mat_out, ex, mat_in
    net.clear()
    return out


def reference(spec: ModelSpec, chw: np.ndarray, param: Path, binf: Path, *, postprocess: bool = True) -> np.ndarray:
    """The original model's output for ``chw`` under the :class:`ModelSpec` contract.

    ``spec.options["ncnn_residual"] == "nearest"`` marks graphs (Real-CUGAN x4) that
    output a residual which their ncnn app adds to the nearest-upsampled input in a
    shader; ``postprocess`` applies that step, as the original app does.
    """
    b = spec.border
    _, h, w = chw.shape
    if h % spec.alignment or w % spec.alignment:
        raise ValueError(f"{spec.id}: input {h}x{w} is not a multiple of {spec.alignment}")
    padded = np.pad(chw, ((0, 0), (b, b), (b, b)), mode="reflect") if b else chw
    out = run_ncnn(param, binf, padded)
    oh, ow = h * spec.scale, w * spec.scale
    top, left = (out.shape[1] - oh) // 2, (out.shape[2] - ow) // 2
    if top < 0 or left < 0:
        raise RuntimeError(f"{spec.id}: ncnn output {out.shape} is smaller than {oh}x{ow}")
    out = out[:, top : top + oh, left : left + ow]
    if postprocess and spec.options.get("ncnn_residual") == "nearest":
        out = out + chw.repeat(spec.scale, axis=1).repeat(spec.scale, axis=2)
    return out
