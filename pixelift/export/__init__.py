"""Export stage: PyTorch -> verified artifacts in the cache (every target in
:data:`pixelift.artifacts.TARGETS`; builders registered in :mod:`pixelift.export.targets`).

Needs the ``export`` extra (torch, spandrel, onnx, onnxslim).
"""

from __future__ import annotations

from pixelift.artifacts import ONNX_FP32, SE_TARGET, Artifact, artifact_dir, exported_targets, find
from pixelift.export.onnx_fp32 import parity_checks, source_fingerprint, to_onnx, to_onnx_se

__all__ = [
    "ONNX_FP32",
    "SE_TARGET",
    "Artifact",
    "artifact_dir",
    "exported_targets",
    "find",
    "parity_checks",
    "source_fingerprint",
    "to_onnx",
    "to_onnx_se",
]
