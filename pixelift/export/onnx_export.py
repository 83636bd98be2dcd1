"""PyTorch -> ONNX with dynamic batch/H/W, checked, simplified, self-describing."""

from __future__ import annotations

import json
import logging
import platform
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixelift.errors import ExportError
from pixelift.models.architectures import input_channels
from pixelift.models.spec import ModelSpec
from pixelift.versions import installed_versions

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

OPSET = 17
META_PREFIX = "pixelift."
TOOLS = ("pixelift", "torch", "spandrel", "onnx", "onnxslim", "onnxruntime", "openvino", "ncnn", "numpy")


def tool_versions() -> dict[str, str | None]:
    return {"python": platform.python_version(), **installed_versions(TOOLS)}


def metadata_props(spec: ModelSpec) -> dict[str, str]:
    """What the runtime needs to use the artifact without the registry or torch."""
    return {
        f"{META_PREFIX}model_id": spec.id,
        f"{META_PREFIX}scale": str(spec.scale),
        f"{META_PREFIX}alignment": str(spec.alignment),
        f"{META_PREFIX}border": str(spec.border),
        f"{META_PREFIX}input_range": json.dumps(list(spec.input_range)),
        f"{META_PREFIX}tile_safe": json.dumps(spec.tile_safe),
        f"{META_PREFIX}spec": json.dumps(spec.to_dict(), sort_keys=True),
    }


@dataclass(frozen=True)
class ExportIO:
    """Inputs and outputs of a module with more than one of each (first: ``input``/``output``)."""

    example_inputs: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]  # from the image dummy
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]  # for the names beyond input/output
    metadata: dict[str, str] = field(default_factory=dict)  # extra ``pixelift.*`` metadata


def trace_size(spec: ModelSpec) -> int:
    return spec.alignment * max(1, 64 // spec.alignment)


def export_module(
    module: torch.nn.Module,
    spec: ModelSpec,
    dest: Path,
    *,
    opset: int = OPSET,
    simplify: bool = True,
    io: ExportIO | None = None,
) -> dict[str, Any]:
    """Write ``module`` as ONNX to ``dest``; return facts for the manifest.

    ``io`` describes extra inputs/outputs beyond ``input``/``output`` (the SE-sync
    variant); by default the module takes one image and returns one.
    """
    import onnx
    import torch

    size = trace_size(spec)
    channels = input_channels(spec.architecture)  # the image, then any packed extra inputs
    dummy = torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(0))
    axes = {0: "batch", 2: "height", 3: "width"}
    dynamic: dict[str, dict[int, str]] = {"input": axes, "output": axes}
    args: tuple[Any, ...] = (dummy,)
    input_names, output_names = ["input"], ["output"]
    if io is not None:
        args = io.example_inputs(dummy)
        input_names, output_names = io.input_names, io.output_names
        dynamic = {k: v for k, v in {**dynamic, **io.dynamic_axes}.items() if k in input_names + output_names}
    try:
        # the tracer's warnings (shape arithmetic turned into constants) would reach a user's terminal on a
        # first run; the exported graph is checked against its module before it is published, so they go
        # to the debug log
        with torch.no_grad(), warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            torch.onnx.export(
                module,
                args,
                str(dest),
                dynamo=False,  # the dynamo exporter is 3-10x slower and needs onnxscript
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic,
            )
    except Exception as exc:  # torch raises many unrelated types here
        raise ExportError(f"{spec.id}: torch.onnx.export failed: {exc}") from exc
    for w in said:
        log.debug("%s: torch.onnx.export: %s: %s", spec.id, w.category.__name__, w.message)
    model = onnx.load(str(dest))
    onnx.checker.check_model(model)
    nodes_before = len(model.graph.node)
    simplified = False
    if simplify:
        try:
            import onnxslim

            slim = onnxslim.slim(model)
            onnx.checker.check_model(slim)
            if len(slim.graph.node) < nodes_before:
                model, simplified = slim, True
        except Exception as exc:  # simplification is an optimisation, never a requirement
            log.warning("%s: onnxslim failed, keeping the unsimplified graph: %s", spec.id, exc)
    del model.metadata_props[:]
    meta = metadata_props(spec)
    if io is not None:
        meta.update({f"{META_PREFIX}{k}": v for k, v in io.metadata.items()})
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name = "pixelift"
    onnx.save(model, str(dest))
    return {
        "opset": opset,
        "trace_size": [size, size],
        "dynamic_axes": dynamic,
        "nodes": {"exported": nodes_before, "final": len(model.graph.node), "simplified": simplified},
        "ops": sorted({n.op_type for n in model.graph.node}),
    }


def read_metadata(path: Path) -> dict[str, str]:
    """The pixelift metadata embedded in an ONNX file (needs only the onnx package)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key.removeprefix(META_PREFIX): p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}
