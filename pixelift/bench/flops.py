"""Direct-convolution FLOPs counted from an ONNX graph (never typed in).

The input's dynamic dims are pinned to the tile size, ``onnx.shape_inference`` fills in
every tensor's shape, and each Conv / ConvTranspose node contributes
``2 * MACs`` (a multiply and an add per weight per output pixel). Everything else
(activations, adds, pixel shuffle, resize) is ignored: this is the work a direct
convolution would do, a reference point rather than a wall (Winograd does less).
"""

from __future__ import annotations

from pathlib import Path


def _dims(vi) -> list[int | None]:  # type: ignore[no-untyped-def]
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


def conv_flops(model_path: Path | str, height: int, width: int, batch: int = 1) -> dict[str, float | int | None]:
    """``{"flops": total, "convs": n, "unknown": n without an inferred shape}`` for one input of HxW."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(model_path))
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in inits]
    for inp in real_inputs[:1]:
        dims = inp.type.tensor_type.shape.dim
        for d, v in zip(dims, (batch, None, height, width), strict=False):
            if v is not None:
                d.ClearField("dim_param")
                d.dim_value = v
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int | None]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        shapes[vi.name] = _dims(vi)
    weights = {t.name: list(t.dims) for t in graph.initializer}
    total, convs, unknown = 0, 0, 0
    for node in inferred.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        convs += 1
        w = weights.get(node.input[1]) or shapes.get(node.input[1])
        next((a.i for a in node.attribute if a.name == "group"), 1)
        ref = shapes.get(node.output[0] if node.op_type == "Conv" else node.input[0])
        if not w or not ref or len(ref) != 4 or any(v is None for v in ref) or any(v is None for v in w):
            unknown += 1
            continue
        wi = [v for v in w if v is not None]  # every dim is known (checked above)
        ri = [v for v in ref if v is not None]
        k = 1
        for n in wi[2:]:
            k *= n
        if node.op_type == "Conv":  # weight: Cout x Cin/g x kh x kw; per output pixel
            macs = ri[0] * ri[2] * ri[3] * wi[0] * wi[1] * k
        else:  # ConvTranspose weight: Cin x Cout/g x kh x kw; per input pixel
            macs = ri[0] * ri[2] * ri[3] * wi[0] * wi[1] * k
        total += 2 * macs
    return {"flops": total if unknown == 0 else None, "flops_partial": total, "convs": convs, "unknown": unknown}
