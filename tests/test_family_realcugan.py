"""Real-CUGAN SE/Pro x2/x3/x4: ncnn weights on spandrel's UpCunet vs the original graphs.

Parity is measured against :func:`pixelift.models.oracle.reference` (the original
graph run by the official ``ncnn`` package, fp32) on small non-square crops. The x4
graphs return a residual that realcugan-ncnn-vulkan adds to the nearest-upsampled input
in a shader; the zoo records that as ``options["ncnn_residual"]`` and so does this test.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from pixelift.errors import UnknownArchitectureError, WeightFormatError
from pixelift.models import get, oracle
from pixelift.models import ncnn as ncnn_format
from pixelift.models.importers import load_ncnn
from pixelift.models.importers import realcugan as importer
from pixelift.models.zoo.realcugan import SPECS
from tests.images import art_image, psnr, to_chw
from tests.torch_helpers import export_onnx, files, model, run_torch

PARITY_DB = 60.0  # torch vs ncnn (both fp32); measured 125-133 dB
ONNX_DB = 60.0  # onnxruntime vs torch; measured 113-133 dB


def reference(model_id: str, chw: np.ndarray) -> np.ndarray:
    return oracle.reference(get(model_id), chw, *files(model_id))


# --- (a) parity with the original ncnn graph: PSNR >= 60 dB ----------------------------


@pytest.mark.parametrize(
    ("model_id", "h", "w"),
    [
        ("realcugan-se-x2", 34, 50),  # even, not a multiple of 4
        ("realcugan-se-x3", 40, 56),
        ("realcugan-se-x4", 34, 50),  # x4 needs only even sizes
        ("realcugan-pro-x3", 40, 56),
        ("realcugan-pro-x2-conservative", 36, 52),
    ],
)
def test_torch_matches_ncnn_at_60db(model_id: str, h: int, w: int) -> None:
    spec = get(model_id)
    chw = to_chw(art_image(h, w))
    ref = reference(model_id, chw)
    out = run_torch(model(model_id), chw)
    assert out.shape == ref.shape == (3, h * spec.scale, w * spec.scale)
    assert psnr(out, ref) >= PARITY_DB


def test_x4_graph_returns_a_residual() -> None:
    """The bare x4 graph is centred on 0, not an image: the module must add the input."""
    chw = to_chw(art_image(34, 50))
    bare = oracle.reference(get("realcugan-se-x4"), chw, *files("realcugan-se-x4"), postprocess=False)
    assert abs(float(bare.mean())) < 0.05 < float(chw.mean())
    assert abs(float(run_torch(model("realcugan-se-x4"), chw).mean()) - float(chw.mean())) < 0.05


def test_pro_graph_has_no_range_change_ops() -> None:
    """Pro graphs are SE graphs with other weights: no x*0.7+0.15 / (y-0.15)/0.7 ops."""
    se, pro = (load_ncnn(get(i)).graph for i in ("realcugan-se-x2", "realcugan-pro-x2"))
    assert [(lyr.type, lyr.params) for lyr in se.layers] == [(lyr.type, lyr.params) for lyr in pro.layers]
    assert model("realcugan-pro-x2").net.pro is None  # spandrel's own range change stays off


# --- (b) geometry: border and alignment in the zoo fit the graphs -----------------------


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_graph_loses_border_px_per_side(scale: int) -> None:
    spec = next(s for s in SPECS if s.scale == scale)
    side = 2 * spec.border + 4 * spec.alignment
    out = oracle.run_ncnn(*files(spec.id), to_chw(art_image(side, side + spec.alignment)))
    assert out.shape[1:] == (4 * spec.alignment * scale, (4 + 1) * spec.alignment * scale)


def test_zoo_geometry() -> None:
    assert len(SPECS) == 17
    want = {2: (18, 2), 3: (14, 4), 4: (19, 2)}
    for spec in SPECS:
        assert (spec.border, spec.alignment) == want[spec.scale], spec.id
        # SE blocks take a global mean over the input: tiles see other statistics
        assert spec.tile_safe is False, spec.id
        assert spec.params == ncnn_format.count_params(load_ncnn(spec).graph), spec.id


@pytest.mark.parametrize(("border", "alignment"), [(17, 2), (18, 1), (14, 2)])
def test_spec_geometry_that_does_not_fit_the_graph_is_rejected(border: int, alignment: int) -> None:
    spec = dataclasses.replace(get("realcugan-se-x2"), border=border, alignment=alignment)
    with pytest.raises(ValueError):
        importer.from_ncnn(load_ncnn(spec), spec)


def test_unaligned_input_is_an_error_not_garbage() -> None:
    with pytest.raises(RuntimeError):
        run_torch(model("realcugan-se-x3"), to_chw(art_image(34, 48)))  # 34 % 4 != 0


# --- (c) mapping failures are typed --------------------------------------------------


@pytest.mark.parametrize(
    ("other_id", "spec_id"),
    [
        ("waifu2x-cunet-x2", "realcugan-se-x2"),  # same weighted layers, other glue ops
        ("waifu2x-photo-x2", "realcugan-se-x2"),
        ("realcugan-se-x2", "realcugan-se-x3"),  # wrong scale for the graph
        ("realcugan-se-x4", "realcugan-se-x2"),
        ("realcugan-pro-x3", "realcugan-se-x4"),
    ],
)
def test_other_graphs_are_rejected(other_id: str, spec_id: str) -> None:
    with pytest.raises(UnknownArchitectureError):
        importer.from_ncnn(load_ncnn(get(other_id)), get(spec_id))


def _edited(model_id: str, edit) -> ncnn_format.NcnnModel:  # type: ignore[no-untyped-def]
    good = load_ncnn(get(model_id))
    return dataclasses.replace(good, graph=ncnn_format.Graph(tuple(edit(list(good.graph.layers)))))


def _swap_se_pair(layers: list[ncnn_format.Layer]) -> list[ncnn_format.Layer]:
    i = next(k for k, lyr in enumerate(layers) if lyr.type == "InnerProduct")
    layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return layers


@pytest.mark.parametrize(
    "edit",
    [
        lambda layers: layers[:-5],  # truncated graph
        lambda layers: [lyr for lyr in layers if lyr.name != "convrelu_12"],  # one SE FC missing
        lambda layers: [lyr for lyr in layers if lyr.name != "convrelu_10"],  # one conv missing
        _swap_se_pair,  # layers out of order
    ],
    ids=["truncated", "missing-se-fc", "missing-conv", "swapped"],
)
def test_broken_layer_list_is_rejected(edit) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownArchitectureError):
        importer.from_ncnn(_edited("realcugan-se-x2", edit), get("realcugan-se-x2"))


@pytest.mark.parametrize("layer", ["convrelu_6", "deconvrelu_1", "convsigmoid_22"])
def test_wrong_weight_size_is_rejected(layer: str) -> None:
    good = load_ncnn(get("realcugan-se-x2"))
    blobs = good.weights[layer]
    out = blobs["bias"].size
    weights = {**good.weights, layer: {"weight": blobs["weight"][: -out * 2], "bias": blobs["bias"]}}
    with pytest.raises(WeightFormatError):
        importer.from_ncnn(dataclasses.replace(good, weights=weights), get("realcugan-se-x2"))


# --- (d) ONNX export with dynamic H/W: onnxruntime vs torch >= 60 dB --------------------


@pytest.mark.parametrize("model_id", ["realcugan-se-x2", "realcugan-se-x3", "realcugan-se-x4", "realcugan-pro-x2"])
def test_onnx_export_is_size_independent_at_60db(model_id: str, tmp_path: Path) -> None:
    module = model(model_id)
    path = tmp_path / "m.onnx"
    export_onnx(model_id, path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    scale = get(model_id).scale
    for h, w in [(48, 80), (96, 32)]:  # neither is the 64x64 trace size
        chw = to_chw(art_image(h, w))
        (got,) = sess.run(None, {"input": chw[None]})
        want = run_torch(module, chw)
        assert got.shape == (1, 3, h * scale, w * scale)
        assert psnr(got[0], want) >= ONNX_DB
