"""The target table: every kind of file the artifact store holds. Torch-free.

Adding a target is one row here and one builder registered by the export stage
(:mod:`pixelift.export.targets`); the capability table (:mod:`pixelift.precision`) says
which provider runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pixelift.errors import InvalidIdError


class Format(StrEnum):
    ONNX = "onnx"
    OPENVINO_IR = "openvino-ir"
    COREML = "coreml"
    NCNN = "ncnn"


@dataclass(frozen=True)
class Target:
    """One file kind in the artifact cache."""

    name: str
    format: Format
    precision: str  # of the stored weights
    file: str  # the main file (or package directory) inside the artifact folder
    note: str = ""
    #: measured for fidelity and speed as a row of the capability table (SE-sync is a helper graph)
    measured: bool = True
    #: built straight from the model's own weight files of this source kind (no conversion,
    #: seconds): the runtime builds it on first use where a provider runs it
    from_source: str | None = None


ONNX_FP32 = "onnx-fp32"
#: The SE-sync variant of a model with SE blocks (pixelift.export.se_sync), for tiled runs.
SE_TARGET = "onnx-fp32-se"

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(ONNX_FP32, Format.ONNX, "fp32", "model.onnx", "the verified export every other target derives from"),
        Target(SE_TARGET, Format.ONNX, "fp32", "model.onnx", "SE blocks that take whole-image means", measured=False),
        Target("onnx-fp16", Format.ONNX, "fp16", "model.onnx", "fp16 weights and activations, fp32 I/O kept"),
        Target("onnx-int8", Format.ONNX, "int8", "model.onnx", "QDQ static, U8 activations / S8 per-channel weights"),
        Target("openvino-fp32", Format.OPENVINO_IR, "fp32", "model.xml", "ov.convert_model + ov.save_model"),
        Target("openvino-fp16", Format.OPENVINO_IR, "fp16", "model.xml", "IR with weights compressed to fp16"),
        Target("openvino-int8", Format.OPENVINO_IR, "int8", "model.xml", "NNCF post-training quantization, convs only"),
        # the original graph copied from its package; run by the ncnn provider (not every model has one)
        Target(
            "ncnn-fp32",
            Format.NCNN,
            "fp32",
            "model.param",
            "the zoo's original ncnn graph, with its contract (border, residual)",
            from_source="ncnn-package",
        ),
        # run by the coreml-native provider (macOS); pixelift.export.coreml validates it anywhere
        Target("coreml-fp16", Format.COREML, "fp16", "model.mlpackage", "ML Program, fp16 compute, RangeDim H/W"),
    )
}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise InvalidIdError(f"unknown artifact target {name!r}; known: {', '.join(TARGETS)}") from None


__all__ = ["ONNX_FP32", "SE_TARGET", "TARGETS", "Format", "Target", "get_target"]
