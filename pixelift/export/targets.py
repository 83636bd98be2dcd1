"""The export stage's builder registry: artifact target -> the function that builds it.

This is the :class:`pixelift.artifacts.Builder` that the export stage registers under
the ``pixelift.builders`` entry point (pyproject.toml), so the runtime, which never imports
this package, can still have a missing artifact built. Adding a target: a row in
:data:`pixelift.artifacts.TARGETS` and one entry here.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from pixelift import precision as P
from pixelift.artifacts import ONNX_FP32, SE_TARGET, TARGETS, Artifact, Format, find
from pixelift.errors import ExportError

log = logging.getLogger(__name__)


def _registry() -> dict[str, Callable[..., Artifact]]:
    from pixelift.export import to_onnx, to_onnx_se
    from pixelift.export.coreml import to_coreml
    from pixelift.export.ncnn import to_ncnn
    from pixelift.export.openvino_int8 import to_openvino_int8
    from pixelift.export.precision import to_fp16, to_int8, to_openvino_ir

    return {
        ONNX_FP32: to_onnx,
        SE_TARGET: to_onnx_se,
        "onnx-fp16": to_fp16,
        "onnx-int8": to_int8,
        "openvino-fp32": functools.partial(to_openvino_ir, fp16=False),
        "openvino-fp16": functools.partial(to_openvino_ir, fp16=True),
        "openvino-int8": to_openvino_int8,
        "coreml-fp16": to_coreml,
        "ncnn-fp32": to_ncnn,
    }


def builders() -> dict[str, Callable[..., Artifact]]:
    table = _registry()
    missing = set(TARGETS) - set(table)
    if missing:  # a target row without a builder is a programming error, caught by the tests
        raise ExportError(f"no builder for target(s) {', '.join(sorted(missing))}")
    return table


def build(model_id: str, target: str, *, force: bool = False) -> Artifact:
    """Build (or return the cached, intact) ``target`` artifact of ``model_id``."""
    try:
        fn = builders()[target]
    except KeyError:
        raise ExportError(f"unknown artifact target {target!r}; known: {', '.join(TARGETS)}") from None
    return fn(model_id, force=force)


#: a target format that needs a runtime to build (and measure)
FORMAT_NEEDS = {Format.OPENVINO_IR: "openvino", Format.NCNN: "ncnn"}


def export_precision(model_id: str, precision: str, **kw: Any) -> list[Artifact]:
    """Build every target stored at ``precision`` (bf16 is a hint on onnx-fp32: nothing to
    build) and measure each runnable capability row. ``kw`` go to the builders that take them."""
    from pixelift.models import get as get_spec

    if precision not in P.PRECISIONS:
        raise ExportError(f"precision must be one of {P.PRECISIONS}")
    out: list[Artifact] = [build(model_id, ONNX_FP32)]
    for name, make in builders().items():
        target = P.TARGETS.get(name)
        # derived targets only: onnx-fp32 is out[0]; Core ML has its own flag (export --coreml)
        if target is None or name == ONNX_FP32 or target.format == Format.COREML or target.precision != precision:
            continue
        if target.from_source is not None and target.from_source not in get_spec(model_id).source_kinds:
            log.info("%s: %s skipped: the model has no %s weights", model_id, name, target.from_source)
            continue
        needs = FORMAT_NEEDS.get(target.format)
        if needs is not None and not P.probe_available(needs):
            log.info("%s: %s skipped: %s is not available", model_id, name, needs)
            continue
        params = inspect.signature(make).parameters
        out.append(make(model_id, **{k: v for k, v in kw.items() if k in params}))
    P.measure_model(model_id, precisions=(precision,))
    return [find(model_id, a.target) or a for a in out]


__all__ = ["FORMAT_NEEDS", "build", "builders", "export_precision"]
