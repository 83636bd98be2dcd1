"""waifu2x UpConv7 / CUNet / UpCUNet: PyTorch port vs the original ncnn graphs.

Parity is measured against :func:`pixelift.models.oracle.reference` (the original
graph run by the official ``ncnn`` package, fp32) on small non-square crops.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from pixelift.errors import UnknownArchitectureError, WeightFormatError
from pixelift.models import get, oracle
from pixelift.models import ncnn as ncnn_format
from pixelift.models.arch.waifu2x import CUNet, UpConv7, UpCUNet, Waifu2x
from pixelift.models.importers import load_ncnn
from pixelift.models.importers import waifu2x as importer
from pixelift.models.zoo.waifu2x import SPECS
from tests.images import art_image, photo_crop, psnr, to_chw
from tests.torch_helpers import export_onnx, files, model, run_torch

PARITY_DB = 60.0  # torch vs ncnn (both fp32); measured ~130 dB
ONNX_DB = 60.0  # onnxruntime vs torch; measured ~130 dB


# --- (a) parity with the original ncnn graph -----------------------------------------


@pytest.mark.parametrize(
    ("model_id", "image"),
    [
        ("waifu2x-photo-x2-noise1", lambda: photo_crop("chelsea", 40, 56)),
        ("waifu2x-anime-x2-noise2", lambda: art_image(40, 56)),
        ("waifu2x-cunet-x1-noise2", lambda: art_image(48, 64)),
        ("waifu2x-cunet-x2", lambda: art_image(34, 50)),  # even, not a multiple of 4
    ],
)
def test_torch_matches_ncnn(model_id: str, image) -> None:  # type: ignore[no-untyped-def]
    spec = get(model_id)
    chw = to_chw(image())
    ref = oracle.reference(spec, chw, *files(model_id))
    out = run_torch(model(model_id), chw)
    assert out.shape == (3, chw.shape[1] * spec.scale, chw.shape[2] * spec.scale)
    assert out.shape == ref.shape
    assert psnr(out, ref) >= PARITY_DB


# --- (b) geometry of the original graphs ---------------------------------------------


def raw_ncnn_shape(model_id: str, h: int, w: int) -> tuple[int, int]:
    out = oracle.run_ncnn(*files(model_id), to_chw(art_image(h, w)))
    return out.shape[1], out.shape[2]


def test_upconv7_loses_7_input_px_per_side() -> None:
    assert raw_ncnn_shape("waifu2x-photo-x2", 40, 33) == (2 * 40 - 28, 2 * 33 - 28)


def test_cunet_x1_loses_28_px_and_truncates_unless_multiple_of_4() -> None:
    assert raw_ncnn_shape("waifu2x-cunet-x1-noise0", 64, 68) == (64 - 56, 68 - 56)
    # 66 and 70 are not multiples of 4: ncnn silently drops rows instead of failing
    assert raw_ncnn_shape("waifu2x-cunet-x1-noise0", 66, 70) == (8, 12)


def test_cunet_x2_loses_18_input_px_and_truncates_odd_sizes() -> None:
    assert raw_ncnn_shape("waifu2x-cunet-x2", 66, 64) == (2 * 66 - 72, 2 * 64 - 72)
    assert raw_ncnn_shape("waifu2x-cunet-x2", 65, 67) == (2 * 64 - 72, 2 * 66 - 72)  # truncated


@pytest.mark.parametrize(("net", "h", "w"), [(UpConv7(), 40, 33), (CUNet(), 64, 68), (UpCUNet(), 66, 64)])
def test_raw_torch_networks_have_the_ncnn_geometry(net: torch.nn.Module, h: int, w: int) -> None:
    with torch.no_grad():
        out = net(torch.zeros(1, 3, h, w))
    assert out.shape[2:] == (net.scale * h - 2 * net.shrink, net.scale * w - 2 * net.shrink)


def test_zoo_border_and_alignment_match_the_networks() -> None:
    assert len(SPECS) == 19
    for spec in SPECS:
        net = importer.raw_net(spec)
        assert spec.border * spec.scale == net.shrink, spec.id
        assert (2 * spec.border) % net.alignment == 0 and spec.alignment % net.alignment == 0, spec.id
        # SE blocks pool over the whole image: only UpConv7 is exactly tileable
        assert spec.tile_safe == isinstance(net, UpConv7), spec.id


# --- (c) mapping failures are typed ---------------------------------------------------


# realcugan-se-x2 has the very same weighted layers as UpCUNet, but other ops (BinaryOp, ...)
@pytest.mark.parametrize("other_id", ["realesrgan-animevideov3-x4", "realesrgan-x4plus", "realcugan-se-x2"])
def test_other_graphs_are_rejected(other_id: str) -> None:
    with pytest.raises(UnknownArchitectureError):
        importer.from_ncnn(load_ncnn(get(other_id)), get("waifu2x-cunet-x2"))


def test_cunet_x1_graph_is_not_an_upcunet() -> None:
    with pytest.raises(UnknownArchitectureError):
        importer.from_ncnn(load_ncnn(get("waifu2x-cunet-x1-noise0")), get("waifu2x-cunet-x2"))


def test_upconv7_graph_is_not_a_cunet() -> None:
    with pytest.raises(UnknownArchitectureError):
        importer.from_ncnn(load_ncnn(get("waifu2x-photo-x2")), get("waifu2x-cunet-x1-noise0"))


def test_missing_layer_is_rejected() -> None:
    good = load_ncnn(get("waifu2x-photo-x2"))
    layers = tuple(lyr for lyr in good.graph.layers if lyr.name != "conv3_layer")
    broken = dataclasses.replace(good, graph=ncnn_format.Graph(layers))
    with pytest.raises(UnknownArchitectureError):
        importer.from_ncnn(broken, get("waifu2x-photo-x2"))


def test_wrong_weight_size_is_rejected() -> None:
    good = load_ncnn(get("waifu2x-photo-x2"))
    weights = dict(good.weights)
    weights["conv2_layer"] = {
        "weight": good.weights["conv2_layer"]["weight"][: -32 * 9],
        "bias": good.weights["conv2_layer"]["bias"],
    }
    with pytest.raises(WeightFormatError):
        importer.from_ncnn(dataclasses.replace(good, weights=weights), get("waifu2x-photo-x2"))


def test_border_too_small_for_the_network_is_rejected() -> None:
    with pytest.raises(ValueError):
        Waifu2x(UpCUNet(), border=17)


# --- (d) ONNX export with dynamic H/W ------------------------------------------------


@pytest.mark.parametrize("model_id", ["waifu2x-anime-x2", "waifu2x-cunet-x1-noise1", "waifu2x-cunet-x2"])
def test_onnx_export_is_size_independent(model_id: str, tmp_path: Path) -> None:
    import onnxruntime as ort

    module = model(model_id)
    path = tmp_path / "m.onnx"
    export_onnx(model_id, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scale = get(model_id).scale
    for h, w in [(48, 80), (96, 32)]:  # neither is the 64x64 trace size
        chw = to_chw(art_image(h, w))
        (got,) = sess.run(None, {"input": chw[None]})
        want = run_torch(module, chw)
        assert got.shape == (1, 3, h * scale, w * scale)
        assert psnr(got[0], want) >= ONNX_DB
