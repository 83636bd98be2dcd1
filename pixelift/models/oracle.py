"""Run an original ncnn model with the official ``ncnn`` package: the parity oracle.

The reference output follows the model contract of :class:`ModelSpec`: the input is
reflect-padded by ``spec.border`` on each side, run through the original graph, and
the result is centre-cropped to ``scale`` times the unpadded size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pixelift.models import ncnn as ncnn_format
from pixelift.models.spec import ModelSpec
from pixelift.providers.ncnn import NcnnNet


def run_ncnn(param: Path, binf: Path, chw: np.ndarray, *, threads: int = 2) -> np.ndarray:
    """Run one CHW float32 image through an ncnn graph, returning a CHW float32 copy."""
    with NcnnNet(param, binf, threads=threads) as net:
        return net.run(chw)


def contract(spec: ModelSpec, *, postprocess: bool = True) -> ncnn_format.Contract:
    """The :class:`~pixelift.models.ncnn.Contract` of ``spec``'s original graph.

    ``spec.options["ncnn_residual"] == "nearest"`` marks graphs (Real-CUGAN x4) that
    output a residual which their ncnn app adds to the nearest-upsampled input in a
    shader; ``postprocess`` applies that step, as the original app does.
    """
    residual = spec.options.get("ncnn_residual") if postprocess else None
    return ncnn_format.Contract(spec.scale, spec.border, residual)


def contract_run(spec: ModelSpec, net: NcnnNet, chw: np.ndarray, *, postprocess: bool = True) -> np.ndarray:
    """``net`` on ``chw`` under the :class:`ModelSpec` contract (pad, run, crop, post-process)."""
    _, h, w = chw.shape
    if h % spec.alignment or w % spec.alignment:
        raise ValueError(f"{spec.id}: input {h}x{w} is not a multiple of {spec.alignment}")
    return contract(spec, postprocess=postprocess).apply(net.run, chw)


def reference(spec: ModelSpec, chw: np.ndarray, param: Path, binf: Path, *, postprocess: bool = True) -> np.ndarray:
    """The original model's output for ``chw`` under the :class:`ModelSpec` contract."""
    with NcnnNet(param, binf) as net:
        return contract_run(spec, net, chw, postprocess=postprocess)
