"""Export every zoo model and hold it to three parity checks, each >= 60 dB PSNR:

- imported PyTorch vs the original ncnn model run by the official ``ncnn`` package;
- the exported ONNX on onnxruntime CPU vs PyTorch;
- the same ONNX on OpenVINO CPU with INFERENCE_PRECISION_HINT=f32 vs PyTorch.

The parity input is a non-square crop of a real image (the bundled photo for photo
models, a flat-colour illustration otherwise), odd-sized where the model allows it, and
of a different size than the one the ONNX graph was traced at (so dynamic H/W is proven).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from pixelift import models
from pixelift.artifacts import Manifest
from pixelift.export import ONNX_FP32, find, to_onnx
from pixelift.export.onnx_export import OPSET, read_metadata, trace_size
from pixelift.export.parity import PARITY_DB, parity_size
from pixelift.models.importers import form_name
from pixelift.models.sources import NcnnPackageSource
from pixelift.models.spec import ModelSpec

SLOW = {"realesrgan-x4plus", "realesrgan-x4plus-anime"}
HAS_OV = importlib.util.find_spec("openvino") is not None
# the OpenVINO check runs wherever openvino is installed (the openvino extra; CI has it)
EXPECTED_CHECKS = {("torch", "onnxruntime-cpu"), *([("torch", "openvino-cpu-f32")] if HAS_OV else [])}


def _original(spec: ModelSpec) -> str:
    """The oracle every import is checked against: the ncnn original, or the package's own code."""
    src = spec.sources[0]
    return "ncnn-original" if isinstance(src, NcnnPackageSource) else f"{src.distribution}-original"  # type: ignore[attr-defined]


def _params(ids: list[str]) -> list[object]:
    return [pytest.param(i, marks=pytest.mark.slow) if i in SLOW else i for i in ids]


@pytest.mark.parametrize("model_id", _params(models.REGISTRY.ids()))
def test_export_and_parity(model_id: str) -> None:
    spec = models.get(model_id)
    art = to_onnx(spec)
    rep = art.manifest.parity
    got = {(c.reference, c.candidate) for c in rep.checks}
    assert got == {*EXPECTED_CHECKS, (_original(spec), "torch")}
    for c in rep.checks:
        assert c.passed and c.psnr_db >= PARITY_DB == c.threshold_db, c
    assert rep.passed and rep.worst_db is not None and rep.worst_db >= PARITY_DB
    h, w = parity_size(spec)
    assert (h, w) != (trace_size(spec),) * 2
    if spec.alignment == 1:
        assert h % 2 == 1 and w % 2 == 1
    _check_artifact(spec, art.manifest)
    art.verify()


def _check_artifact(spec: ModelSpec, manifest: Manifest) -> None:
    """The artifact is self-describing and its manifest is complete."""
    art = find(spec.id, ONNX_FP32)
    assert art is not None and art.path.name == "model.onnx"
    meta = read_metadata(art.path)
    assert meta["model_id"] == spec.id and int(meta["scale"]) == spec.scale
    assert ModelSpec.from_dict(json.loads(meta["spec"])) == spec
    import onnx

    # the manifest states the opset the graph really declares
    graph_opset = {o.domain: o.version for o in onnx.load(str(art.path), load_external_data=False).opset_import}
    assert manifest["opset"] == graph_opset[""] == OPSET
    assert manifest["tools"]["torch"] and manifest["tools"]["onnxruntime"]
    assert (manifest.model_id, manifest.target, manifest.file) == (spec.id, ONNX_FP32, "model.onnx")
    files = manifest["sources"][0]["files"]
    ncnn_pair = isinstance(spec.sources[0], NcnnPackageSource)
    assert {f["name"].rsplit(".", 1)[1] for f in files} == ({"param", "bin"} if ncnn_pair else {"pth"})
    assert all(len(f["sha256"]) == 64 for f in files)
    assert ModelSpec.from_dict(manifest["spec"]) == spec
    assert manifest.get("form") == form_name(spec)  # ESRGAN: its tail in strips (test below)


def test_onnx_runs_batched_and_at_other_sizes_with_onnxruntime_alone() -> None:
    """Dynamic batch/H/W: two images of a new size in one call match two single calls."""
    import onnxruntime as ort

    from pixelift.samples import photo_crop, to_chw

    art = to_onnx("span-x2-ch48")
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    x = np.stack([to_chw(photo_crop(33, 71)), to_chw(photo_crop(33, 71, top=10, left=30))])
    both = sess.run(None, {"input": x})[0]
    assert both.shape == (2, 3, 66, 142)
    one = sess.run(None, {"input": x[1:]})[0]
    assert np.abs(both[1:] - one).max() < 1e-5


def test_cached_artifact_is_reused_and_tampering_detected(caplog: pytest.LogCaptureFixture) -> None:
    """A tampered artifact is detected, never used, and rebuilt (damage counts as missing)."""
    from pixelift.errors import DamagedArtifactError

    a = to_onnx("realesrgan-animevideov3-x4")
    b = to_onnx("realesrgan-animevideov3-x4")
    assert a.manifest["created"] == b.manifest["created"]
    data = a.path.read_bytes()
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    a.path.write_bytes(tampered)
    with pytest.raises(DamagedArtifactError, match="sha256"):
        a.verify()
    with caplog.at_level("WARNING"):
        c = to_onnx("realesrgan-animevideov3-x4")
    assert "sha256 does not match" in caplog.text
    c.verify()
    assert c.path.read_bytes() != tampered
    d = to_onnx("realesrgan-animevideov3-x4", force=True)
    d.verify()


@pytest.mark.parametrize(
    ("scale", "shuffle", "upsampler"),
    [(4, None, "upconv"), (2, 2, "upconv"), (3, None, "upconv"), (4, None, "pixel_shuffle")],
)
def test_esrgan_tail_strips_equal_the_module(scale: int, shuffle: int | None, upsampler: str) -> None:
    """The exported form of an RRDBNet (its upsampling tail in row strips, for memory) computes
    what the module computes, at any height, including fewer rows than strips; x2 models
    pixel-unshuffle ahead of the body, and spandrel's upsamplers all keep the equality."""
    import torch
    from spandrel.architectures.ESRGAN import ESRGAN as RRDBNet

    from pixelift.models.importers.esrgan import FORM, TAIL_STRIPS, export_form

    torch.manual_seed(0)
    in_nc = 3 * (shuffle or 1) ** 2
    net = RRDBNet(in_nc=in_nc, num_filters=16, num_blocks=2, scale=scale, shuffle_factor=shuffle, upsampler=upsampler)
    net.eval()
    form, name = export_form(net)
    assert name == FORM and form is not net
    # (one row is below what spandrel's reflect padding of an x2 model's unshuffle takes)
    for h, w in ((37, 29), (TAIL_STRIPS - 3, 11), (2 if shuffle else 1, 5), (2 * TAIL_STRIPS + 1, 4)):
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            want, got = net(x), form(x)
        assert got.shape == want.shape
        assert float((got - want).abs().max()) < 1e-5, (h, w)
    # a module whose layers are not RRDBNet's sequence is exported as it is
    other = torch.nn.Conv2d(3, 3, 3)
    assert export_form(other) == (other, None)


@pytest.mark.slow
def test_an_artifact_of_another_form_is_exported_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ESRGAN artifact exported before its tail ran in strips (or in another number of them)
    holds 3x the memory the tile chooser plans for: it is not reused."""
    import logging

    from pixelift.models import importers

    spec = models.get("realesrgan-x4plus-anime")
    to_onnx(spec)
    caplog.set_level(logging.INFO, logger="pixelift")
    to_onnx(spec)
    assert "using cached artifact" in caplog.text
    caplog.clear()
    monkeypatch.setattr(importers, "form_name", lambda spec: "tail-strips-99")
    art = to_onnx(spec)
    assert "using cached artifact" not in caplog.text
    assert art.manifest.get("form") == importers.esrgan.FORM  # type: ignore[attr-defined]
