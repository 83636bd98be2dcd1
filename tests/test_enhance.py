"""The Python API and the ``enhance`` CLI on real photos: types, alpha, pipelines, batches."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image, ImageCms

from pixelift import Enhancer
from pixelift.cli import main
from pixelift.export import to_onnx
from pixelift.metrics import psnr
from pixelift.providers import PROVIDERS
from pixelift.runtime import imageio, session
from pixelift.runtime.enhancer import TileOptions
from tests.images import photo_crop

MODEL = "span-x2-ch48"


@pytest.fixture(scope="module")
def enh() -> Enhancer:
    return Enhancer(MODEL, provider="cpu")


def test_same_type_and_dtype_back(enh: Enhancer) -> None:
    img = photo_crop("chelsea", 40, 52)
    out = enh.enhance(img)
    assert out.dtype == np.uint8 and out.shape == (80, 104, 3)
    pil = enh.enhance(Image.fromarray(img))
    assert isinstance(pil, Image.Image) and pil.size == (104, 80)
    assert np.array_equal(np.asarray(pil), out)
    u16 = enh.enhance(img.astype(np.uint16) * 257)
    assert u16.dtype == np.uint16 and u16.max() > 255
    assert psnr(u16 / 65535.0, out / 255.0) > 45
    f32 = enh.enhance(img.astype(np.float32) / 255)
    assert f32.dtype == np.float32 and psnr(f32, out / 255.0) > 45
    gray = enh.enhance(img[..., 1])
    assert gray.shape == (80, 104) and gray.dtype == np.uint8


def test_output_matches_the_model_run_directly(enh: Enhancer) -> None:
    """The pipeline (tiling, padding, dtype round trip) stays >= 45 dB from one plain model call."""
    import onnxruntime as ort

    img = photo_crop("coffee", 96, 128)
    sess = ort.InferenceSession(str(to_onnx(MODEL).path), providers=["CPUExecutionProvider"])
    direct = sess.run(None, {"input": img.transpose(2, 0, 1)[None].astype(np.float32) / 255})[0][0]
    tiled = Enhancer(MODEL, provider="cpu", tiles=TileOptions(tile=48)).enhance(img)
    assert psnr(tiled.transpose(2, 0, 1) / 255.0, np.clip(direct, 0, 1)) >= 45


def test_transparent_edges_do_not_go_dark(enh: Enhancer) -> None:
    """Colour under alpha=0 is black here; premultiplied processing keeps the red edge red."""
    h = w = 48
    yy, xx = np.mgrid[:h, :w]
    alpha = np.clip((14.0 - np.hypot(yy - 24, xx - 24)) / 3.0, 0, 1)
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 0] = np.where(alpha > 0, 230, 0)
    rgba[..., 1] = np.where(alpha > 0, 40, 0)
    rgba[..., 3] = np.rint(alpha * 255)
    out = enh.enhance(rgba)
    assert out.shape == (96, 96, 4)
    a = out[..., 3].astype(float) / 255
    edge = (a > 0.3) & (a < 0.95)
    assert edge.sum() > 50
    assert out[..., 0][edge].mean() > 200  # without premultiplication this falls toward black
    assert out[..., 3][48, 48] == 255 and out[..., 3][0, 0] == 0


def test_a_cut_out_stays_a_cut_out(enh: Enhancer) -> None:
    """A binary alpha (palette transparency, a mask) came back with a speckled band of soft values along
    its edges (1, 2, 30, 55 beside 0 and 255); it is cut at one half: only 0 and 255, the edge where the
    input's was, and the colour inside unpremultiplied with the model's own alpha (no dark rim)."""
    h, w = 96, 128
    yy, xx = np.mgrid[:h, :w]
    disc = np.hypot(yy - 48, xx - 60) < 30
    rgba = np.dstack([photo_crop("coffee", h, w), np.where(disc, 255, 0).astype(np.uint8)])
    out = enh.enhance(rgba)
    a = out[..., 3]
    assert set(np.unique(a).tolist()) == {0, 255}
    want = np.repeat(np.repeat(disc, 2, axis=0), 2, axis=1)
    assert (a.astype(bool) != want).mean() < 0.01  # the same disc, up to its boundary pixels
    oy, ox = np.mgrid[: 2 * h, : 2 * w]
    ring = (np.hypot(oy + 0.5 - 96, ox + 0.5 - 120) < 60) & (np.hypot(oy + 0.5 - 96, ox + 0.5 - 120) >= 56) & (a > 0)
    inner = np.repeat(np.repeat(rgba[..., :3], 2, axis=0), 2, axis=1)
    assert ring.sum() > 500 and abs(float(out[..., :3][ring].mean()) - float(inner[ring].mean())) < 10


def test_a_cut_out_edge_has_no_halo(enh: Enhancer) -> None:
    """The opaque pixels along a cut-out's edge come out as the same photo without alpha does: its colour
    is carried past the edge, not premultiplied to black (SPAN's sharpening of the black lit a rim:
    within 3 px of a hole, p95 |diff| 96-100 levels, a 64-colour palette's transparent index 240)."""
    h, w = 96, 128
    photo = photo_crop("astronaut", h, w)
    yy, xx = np.mgrid[:h, :w]
    hole = np.hypot(yy - 48, xx - 64) < 25  # a product shot's hole, and scattered transparent pixels
    hole |= (yy % 17 == 3) & (xx % 23 == 5)
    out = enh.enhance(np.dstack([photo, np.where(hole, 0, 255).astype(np.uint8)]))
    ref = enh.enhance(photo)
    big = np.repeat(np.repeat(hole, 2, axis=0), 2, axis=1)
    near = np.zeros_like(big)  # opaque output pixels within 3 px of a hidden one
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            near |= np.roll(np.roll(big, dy, axis=0), dx, axis=1)
    near &= out[..., 3] == 255
    diff = np.abs(out[..., :3].astype(float) - ref.astype(float))[near]
    assert near.sum() > 1000 and diff.mean() < 6 and np.percentile(diff, 95) < 30, (diff.mean(), np.percentile(diff, 95))


def test_constant_alpha_is_resized_not_modelled(enh: Enhancer) -> None:
    rgba = np.dstack([photo_crop("astronaut", 32, 32), np.full((32, 32), 200, np.uint8)])
    out = enh.enhance(rgba)
    assert (out[..., 3] == 200).all()


def test_outscale_and_chained_pipeline() -> None:
    img = photo_crop("astronaut", 32, 40)
    assert Enhancer("span-x4-ch48", provider="cpu", outscale=2).enhance(img).shape == (64, 80, 3)
    same = Enhancer("waifu2x-photo-x2-noise3", provider="cpu", outscale=1).enhance(img)
    assert same.shape == img.shape
    chain = Enhancer(["waifu2x-photo-x2-noise1", MODEL], provider="cpu")
    assert chain.scale == 4 and chain.enhance(img).shape == (128, 160, 3)


def test_sessions_are_cached_by_artifact_and_provider() -> None:
    session.clear_cache()
    a = Enhancer(MODEL, provider="cpu").loaded()[0]
    b = Enhancer(MODEL, provider="cpu").loaded()[0]
    c = Enhancer(MODEL, provider="openvino").loaded()[0]
    assert a.selection is b.selection and c.selection is not a.selection
    assert (a.provider, c.provider) == ("cpu", "openvino")


def test_cpu_and_openvino_agree_at_f32() -> None:
    img = photo_crop("rocket", 48, 56)
    ort_out = Enhancer(MODEL, provider="cpu", precision="fp32").enhance(img.astype(np.float32) / 255)
    ov_out = Enhancer(MODEL, provider="openvino", precision="fp32").enhance(img.astype(np.float32) / 255)
    assert psnr(ort_out, ov_out) >= 60


def test_failed_provider_falls_back_out_loud_or_raises_when_strict(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    session.clear_cache()
    to_onnx(MODEL)  # export (and its OpenVINO parity check) before OpenVINO is broken below

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("device lost")

    monkeypatch.setattr(PROVIDERS["openvino"], "open", broken)
    with caplog.at_level(logging.WARNING):
        lm = Enhancer(MODEL, provider="openvino").loaded()[0]
    assert lm.provider == "cpu" and "device lost" in dict(lm.selection.rejected)["openvino"]
    assert "device lost" in caplog.text
    session.clear_cache()
    src = tmp_path / "in.png"
    Image.fromarray(photo_crop("chelsea", 32, 32)).save(src)
    res = CliRunner().invoke(main, ["enhance", str(src), "--provider", "openvino", "--strict", "--json"])
    assert res.exit_code == 1 and "device lost" in json.loads(res.output.splitlines()[-1])["error"]
    session.clear_cache()


def _make_photo(path: Path, img: np.ndarray | None = None) -> None:
    Image.fromarray(photo_crop("chelsea", 40, 48) if img is None else img).save(path)


def test_cli_batch_goes_on_past_a_bad_file(tmp_path: Path) -> None:
    shoot = tmp_path / "shoot"
    (shoot / "day2").mkdir(parents=True)
    _make_photo(shoot / "a.png")
    _make_photo(shoot / "day2" / "b.jpg")
    (shoot / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["enhance", str(shoot), "-o", str(out), "--recursive", "--json", "-m", MODEL])
    assert res.exit_code == 1
    lines = [json.loads(x) for x in res.stdout.strip().splitlines()]  # stderr: a first run's one-time work
    status = {Path(r["input"]).name: r["status"] for r in lines}
    assert status == {"a.png": "ok", "b.jpg": "ok", "broken.png": "error"}
    assert all({"status", "output", "model", "provider", "seconds", "error"} <= r.keys() for r in lines)
    assert (out / "a.png").is_file() and (out / "day2" / "b.png").is_file()
    assert not (out / "broken.png").exists()
    assert not list(out.rglob("*.part"))
    (shoot / "broken.png").unlink()
    again = CliRunner().invoke(
        main, ["enhance", str(shoot), "-o", str(out), "--recursive", "--skip-existing", "--json"]
    )
    assert again.exit_code == 0
    assert [json.loads(x)["status"] for x in again.stdout.strip().splitlines()] == ["skipped", "skipped"]


def test_cli_default_output_name_and_no_overwrite(tmp_path: Path) -> None:
    src = tmp_path / "photo.jpg"
    _make_photo(src)
    first = CliRunner().invoke(main, ["enhance", str(src), "-q"])
    assert first.exit_code == 0, first.output
    assert (tmp_path / "photo_pixelift.png").is_file()
    before = (tmp_path / "photo_pixelift.png").read_bytes()
    second = CliRunner().invoke(main, ["enhance", str(src), "-q"])
    assert second.exit_code == 1 and "exists" in second.output
    assert (tmp_path / "photo_pixelift.png").read_bytes() == before
    into_input = CliRunner().invoke(main, ["enhance", str(src), "-o", str(src), "-q"])
    assert into_input.exit_code == 1 and src.read_bytes() != b""
    assert Image.open(src).size == (48, 40)


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    assert CliRunner().invoke(main, ["enhance", str(tmp_path), "-m", "no-such-model"]).exit_code == 2
    assert CliRunner().invoke(main, ["enhance", str(tmp_path), "--tile", "banana"]).exit_code == 2


def test_end_to_end_16bit_tiff_with_alpha_icc_exif(tmp_path: Path) -> None:
    """16-bit RGBA TIFF with ICC, EXIF and XMP in; every property checked on the way out."""
    rgb = photo_crop("astronaut", 40, 48).astype(np.uint16) * 257 + 3
    alpha = np.clip(np.mgrid[:40, :48][1] * 1400, 0, 65535).astype(np.uint16)
    icc = imageio.srgb_profile_bytes()
    assert ImageCms.ImageCmsProfile(io.BytesIO(icc))
    exif = Image.Exif()
    exif[0x010F] = "pixelift-test-make"
    exif[0x0110] = "model-7"
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'
    raw_exif = exif.tobytes().removeprefix(b"Exif\x00\x00")
    data = imageio.ImageData.from_arrays(rgb, alpha, icc=icc, exif=raw_exif, xmp=xmp, dpi=(300.0, 300.0))
    src = tmp_path / "edit_in.tif"
    imageio.write_image(data, src)
    res = CliRunner().invoke(main, ["enhance", str(src), "-m", MODEL, "-q"])
    assert res.exit_code == 0, res.output
    out_path = tmp_path / "edit_in_pixelift.tif"
    out = imageio.read_image(out_path)
    assert out.color.dtype == np.uint16 and out.color.shape == (80, 96, 3)
    assert out.alpha is not None and out.alpha.dtype == np.uint16 and out.alpha.shape == (80, 96)
    assert out.alpha.max() > 60000 and out.alpha.min() < 2000
    assert out.icc == icc and out.xmp == xmp
    assert out.dpi is not None and out.dpi[0] == pytest.approx(600)
    with Image.open(out_path) as im:
        ex = im.getexif()
        assert ex[0x010F] == "pixelift-test-make" and ex[0x0110] == "model-7"
    with tifffile.TiffFile(out_path) as tf:
        page = tf.pages[0]
        assert page.dtype == np.uint16 and page.samplesperpixel == 4


def test_cli_decompression_bomb_guard_and_override(tmp_path: Path) -> None:
    src = tmp_path / "big.png"
    _make_photo(src)
    res = CliRunner().invoke(main, ["enhance", str(src), "--max-pixels", "1000", "--json"])
    rec = json.loads(res.output.strip().splitlines()[-1])
    assert res.exit_code == 1 and rec["status"] == "error" and "over the limit" in rec["error"]
    assert not (tmp_path / "big_pixelift.png").exists()
    ok = CliRunner().invoke(main, ["enhance", str(src), "--max-pixels", "none", "-q"])
    assert ok.exit_code == 0 and (tmp_path / "big_pixelift.png").is_file()
    assert CliRunner().invoke(main, ["enhance", str(src), "--max-pixels", "lots"]).exit_code == 2


def test_cli_inputs_that_would_share_an_output_keep_their_suffix(tmp_path: Path) -> None:
    """photo.jpg and photo.webp in one batch must not collide on photo_pixelift.png."""
    _make_photo(tmp_path / "photo.jpg")
    Image.fromarray(photo_crop("coffee", 40, 48)).save(tmp_path / "photo.webp", lossless=True)
    res = CliRunner().invoke(main, ["enhance", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    outs = sorted(Path(json.loads(x)["output"]).name for x in res.output.strip().splitlines())
    assert outs == ["photo_jpg_pixelift.png", "photo_webp_pixelift.png"]


def test_read_conversions_are_reported_in_json(tmp_path: Path) -> None:
    src = tmp_path / "pal.png"
    Image.fromarray(photo_crop("chelsea", 40, 48)).convert("P", palette=Image.Palette.ADAPTIVE).save(src)
    res = CliRunner().invoke(main, ["enhance", str(src), "--json"])
    rec = json.loads(res.output.strip().splitlines()[-1])
    assert rec["status"] == "ok" and any("palette" in n for n in rec["notes"])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["waifu2x-cunet-x1-noise1", "realcugan-se-x3", "waifu2x-photo-x2"])
def test_images_and_tiles_smaller_than_the_models_border_run(model: str) -> None:
    """CUNet, Real-CUGAN and UpConv7 graphs reflect-pad their border inside (28, 14 and 7 px): an image with
    a side that short failed in the graph ('Pad reflect: pre-pad (28) exceeds maximum allowed (19)'). It
    is mirrored up to the graph's smallest side and cropped; a tile asked smaller than that is raised."""
    from pixelift import models

    spec = models.get(model)
    enh = Enhancer(model, provider="cpu")
    for h, w in ((1, 1), (5, 40), (40, 3), (spec.border, spec.border), (spec.min_side, spec.min_side + 1)):
        img = photo_crop("chelsea", h, w) if h > 1 else np.full((1, 1, 3), 120, np.uint8)
        out = enh.enhance(img)
        assert out.shape == (h * spec.scale, w * spec.scale, 3), (h, w)
    # a corner of a photo, mirrored up, stays close to the same corner run inside its photo (away from the
    # mirrored side; the first rows and columns have the image's own border either way)
    big = photo_crop("chelsea", 64, 64)
    whole = enh.enhance(big)
    side = spec.min_side - 1
    small = enh.enhance(big[:side, :side])
    inner = slice(0, max(2, side // 2) * spec.scale)
    # measured 61.2, 33.2 and 57.7 dB: Real-CUGAN's SE means are the crop's own, not the photo's
    assert psnr(small[inner, inner] / 255.0, whole[inner, inner] / 255.0) >= 30.0
    tiled = Enhancer(model, provider="cpu", tiles=TileOptions(tile=16)).enhance(big)
    assert tiled.shape == whole.shape and psnr(tiled / 255.0, whole / 255.0) >= 55.0  # measured inf, 62.4, 62.9
