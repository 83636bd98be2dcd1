"""Core ML target: the PyTorch model (coremltools has no ONNX frontend) as an ML Program
``.mlpackage`` with fp16 compute and flexible H/W (``RangeDim``).

Conversion runs on Linux; prediction needs macOS, so off macOS the package is validated
structurally (spec type, input/output names, shape ranges, fp16 compute). Needs
``coremltools`` (the coreml extra) and torch. The ``coreml-native`` provider runs the
package on macOS; the ``coreml`` provider runs ONNX through onnxruntime's CoreML EP.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pixelift.artifacts import Artifact, find, locked, publish
from pixelift.errors import DamagedArtifactError, ExportError
from pixelift.models import get as get_spec
from pixelift.models.architectures import input_channels
from pixelift.models.spec import ModelSpec

log = logging.getLogger(__name__)

TARGET = "coreml-fp16"
MIN_SIDE, MAX_SIDE = 16, 1024


@contextlib.contextmanager
def _negative_pads_as_slices() -> Iterator[None]:
    """Trace ``F.pad`` with only negative pads (a crop; Real-CUGAN crops this way) as slicing:
    coremltools refuses negative pads ("pad must be non-negative")."""
    import torch
    import torch.nn.functional as F

    original = F.pad

    # same parameter names as F.pad, so keyword calls reach it too
    def pad(
        input: torch.Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None
    ) -> torch.Tensor:
        if mode != "constant" or any(int(p) > 0 for p in pad):
            return original(input, pad, mode=mode, value=value)
        idx = [slice(None)] * input.dim()
        for i in range(len(pad) // 2):  # pad lists (first, last) from the last dim backwards
            first, last = -int(pad[2 * i]), -int(pad[2 * i + 1])
            idx[input.dim() - 1 - i] = slice(first, -last if last else None)
        return input[tuple(idx)]

    F.pad = pad
    try:
        yield
    finally:
        F.pad = original


def convert(spec: ModelSpec, dest: Path) -> Any:
    import coremltools as ct
    import numpy as np
    import torch

    from pixelift.models.importers import build_torch

    module = build_torch(spec)
    side = spec.alignment * max(1, 64 // spec.alignment)
    channels = input_channels(spec.architecture)  # the image, then any packed extra inputs
    example = torch.rand(1, channels, side, side)
    with torch.no_grad(), _negative_pads_as_slices():
        traced = torch.jit.trace(module, example)  # the most forgiving path (SPAN converts unpatched)
    lo = max(MIN_SIDE, spec.alignment)
    shape = (1, channels, ct.RangeDim(lo, MAX_SIDE, default=side), ct.RangeDim(lo, MAX_SIDE, default=side))
    try:
        ml = ct.convert(
            traced,
            # fp32 in/out kept, fp16 body (casts at both ends), like the onnx-fp16 target
            inputs=[ct.TensorType(name="input", shape=shape, dtype=np.float32)],
            outputs=[ct.TensorType(name="output", dtype=np.float32)],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16,
            minimum_deployment_target=ct.target.macOS13,
        )
    except Exception as exc:  # coremltools raises many types
        raise ExportError(f"{spec.id}: coremltools conversion failed: {exc}") from exc
    ml.short_description = f"pixelift {spec.id}: x{spec.scale} {spec.architecture}"
    ml.user_defined_metadata.update({"pixelift.model_id": spec.id, "pixelift.scale": str(spec.scale)})
    ml.save(str(dest))
    return ml


def validate(path: Path, spec: ModelSpec) -> dict[str, Any]:
    """Structural checks that run anywhere: ML Program, names, flexible H/W, fp16 compute."""
    import coremltools as ct

    ml = ct.models.MLModel(str(path), skip_model_load=True)
    pb = ml.get_spec()
    if pb.WhichOneof("Type") != "mlProgram":
        raise ExportError(f"{spec.id}: not an ML Program ({pb.WhichOneof('Type')})")
    (inp,) = pb.description.input
    (out,) = pb.description.output
    ranges = [(r.lowerBound, r.upperBound) for r in inp.type.multiArrayType.shapeRange.sizeRanges]
    if inp.name != "input" or out.name != "output" or len(ranges) != 4 or ranges[2][1] < 512:
        raise ExportError(f"{spec.id}: unexpected Core ML interface {inp.name}/{out.name} {ranges}")
    ops: set[str] = set()
    for fn in pb.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            ops.update(op.type for op in block.operations)
    fp32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    io_fp32 = inp.type.multiArrayType.dataType == fp32 and out.type.multiArrayType.dataType == fp32
    if "cast" not in ops or not io_fp32:  # fp32 I/O around an fp16 body
        raise ExportError(f"{spec.id}: no fp16 casts in the program; compute precision is not fp16")
    return {"spec_version": pb.specificationVersion, "input_ranges": [list(r) for r in ranges], "ops": sorted(ops)}


def to_coreml(spec: ModelSpec | str, *, force: bool = False) -> Artifact:
    """Publish ``artifacts/<id>/coreml-fp16/model.mlpackage`` + manifest through the store
    (locked, atomic); returns the artifact (a cached intact one unless ``force``)."""
    import coremltools as ct

    spec = get_spec(spec) if isinstance(spec, str) else spec
    with locked(spec.id, TARGET):
        cached = find(spec.id, TARGET)
        if cached is not None and not force:
            try:
                cached.verify()
                return cached
            except DamagedArtifactError as exc:
                log.warning("%s: rebuilding: %s", spec.id, exc)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="pixelift-coreml-") as tmp:
            pkg = Path(tmp) / "model.mlpackage"
            convert(spec, pkg)
            facts = validate(pkg, spec)
            manifest = {
                "format": "coreml",
                "precision": "fp16",
                "file": pkg.name,
                "spec": spec.to_dict(),
                "coreml": {**facts, "coremltools": ct.__version__, "min_target": "macOS13"},
                "parity": {"passed": True, "checks": [], "note": "prediction needs macOS; validated structurally"},
                "export_seconds": round(time.perf_counter() - t0, 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            return publish(spec.id, TARGET, pkg, manifest)


def can_predict() -> bool:
    return sys.platform == "darwin"
