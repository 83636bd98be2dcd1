"""Streamed output (pixelift.runtime.stream): bit-identical to the in-memory path, metadata carried, inputs read
by region, atomic on every error (a real full disk included), refusals up front."""

from __future__ import annotations

import errno
import io
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from pixelift import Enhancer, limits
from pixelift.cli import main
from pixelift.errors import (
    ImageTooLargeError,
    ImageWriteError,
    OutputTooLargeForFormatError,
    StreamingUnsupportedError,
)
from pixelift.runtime import imageio, stream
from pixelift.runtime.enhancer import TileOptions
from pixelift.runtime.imageio import stream_write
from pixelift.runtime.imageio.stream_read import open_rows
from pixelift.runtime.imageio.stream_write import StreamMeta, StreamShape, write_streamed
from tests.images import photo_crop

MODEL = "span-x2-ch48"
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'


@pytest.fixture(scope="module")
def enh() -> Enhancer:
    return Enhancer(MODEL, provider="cpu", tiles=TileOptions(tile=48))


def _exif() -> bytes:
    ex = Image.Exif()
    ex[0x010F] = "pixelift-stream-make"
    ex[0x0110] = "model-9"
    return ex.tobytes().removeprefix(b"Exif\x00\x00")


def _inputs(folder: Path) -> dict[str, Path]:
    """An 8-bit RGB PNG, a 16-bit RGBA tiled TIFF with ICC/EXIF/XMP/dpi, a float gray striped TIFF."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = photo_crop("astronaut", 90, 110)
    imageio.write_image(imageio.ImageData.from_arrays(rgb, dpi=(72.0, 72.0)), folder / "rgb8.png")
    c16 = photo_crop("coffee", 90, 110).astype(np.uint16) * 257 + 7
    a16 = np.clip(np.mgrid[:90, :110][1] * 700, 0, 65535).astype(np.uint16)
    icc = imageio.srgb_profile_bytes()
    tifffile.imwrite(
        folder / "rgba16.tif",
        np.concatenate([c16, a16[..., None]], axis=2),
        photometric="rgb",
        extrasamples=["unassalpha"],
        tile=(32, 32),
        iccprofile=icc,
        resolution=(300, 300),
        resolutionunit="INCH",
        extratags=[(700, "B", len(XMP), XMP, True)],
        metadata=None,
    )
    gray = photo_crop("chelsea", 90, 110)[..., 1].astype(np.float32) / 255
    tifffile.imwrite(folder / "grayf.tif", gray, rowsperstrip=8, metadata=None)
    yy, xx = np.mgrid[:90, :110]
    disc = np.where((yy - 40) ** 2 + (xx - 60) ** 2 < 35**2, 255, 0).astype(np.uint8)  # a cut-out: 0 or 255
    cut = np.concatenate([photo_crop("chelsea", 90, 110), disc[..., None]], axis=2)
    imageio.write_image(imageio.ImageData.from_arrays(cut[..., :3], cut[..., 3]), folder / "cutout8.png")
    return {
        "rgb8": folder / "rgb8.png",
        "rgba16": folder / "rgba16.tif",
        "grayf": folder / "grayf.tif",
        "cutout8": folder / "cutout8.png",
    }


@pytest.mark.parametrize("fmt", ["TIFF", "PNG"])
def test_streamed_equals_in_memory_bit_for_bit(enh: Enhancer, tmp_path: Path, fmt: str) -> None:
    """Same tile size: the streamed file holds exactly the in-memory path's pixels and metadata."""
    for name, src in _inputs(tmp_path / "in").items():
        mem, _ = stream.enhance_file(enh, src, tmp_path / f"mem_{name}.{fmt.lower()}", format=fmt, stream="off")
        got, res = stream.enhance_file(enh, src, tmp_path / f"str_{name}.{fmt.lower()}", format=fmt, stream="on")
        assert isinstance(res, stream.StreamedResult) and res.tile == 48
        a, b = imageio.read_image(mem), imageio.read_image(got)
        assert a.color.dtype == b.color.dtype and np.array_equal(a.color, b.color), name
        assert (a.alpha is None) == (b.alpha is None), name
        if a.alpha is not None:
            assert b.alpha is not None and np.array_equal(a.alpha, b.alpha)
            assert int(b.alpha.min()) < int(b.alpha.max())  # the alpha really varies (modelled, not constant)
            if name == "cutout8":  # resized and cut, not modelled: it stays a cut-out
                assert set(np.unique(b.alpha).tolist()) == {0, 255}
        assert (a.icc, a.xmp, a.iptc, a.dpi) == (b.icc, b.xmp, b.iptc, b.dpi), name
        assert b.color.shape[:2] == (180, 220)
    tiff = imageio.read_image(tmp_path / "str_rgba16.tiff") if fmt == "TIFF" else None
    if tiff is not None:
        assert tiff.color.dtype == np.uint16 and tiff.icc == imageio.srgb_profile_bytes() and tiff.xmp == XMP
        assert tiff.dpi == pytest.approx((600.0, 600.0))
        assert imageio.read_image(tmp_path / "str_grayf.tiff").color.dtype == np.float32  # float kept
        with tifffile.TiffFile(tmp_path / "str_rgba16.tiff") as tf:
            assert tf.pages[0].is_tiled


def test_exif_carried_and_patched(enh: Enhancer, tmp_path: Path) -> None:
    src = tmp_path / "exif.png"
    data = imageio.ImageData.from_arrays(photo_crop("rocket", 40, 56), exif=_exif(), dpi=(100.0, 100.0))
    imageio.write_image(data, src)
    for fmt in ("tif", "png"):
        out, _ = stream.enhance_file(enh, src, tmp_path / f"o.{fmt}", stream="on")
        with Image.open(out) as im:
            ex = im.getexif()
            assert ex[0x010F] == "pixelift-stream-make" and ex[0x0110] == "model-9"
        assert imageio.read_image(out).dpi == pytest.approx((200.0, 200.0))


def test_tiff_inputs_are_read_by_region(tmp_path: Path) -> None:
    paths = _inputs(tmp_path)
    for name in ("rgba16", "grayf"):
        ref = imageio.read_image(paths[name])
        with open_rows(paths[name]) as rows:
            assert rows.by_region and (rows.height, rows.width) == (90, 110)
            parts = [rows.read(y, min(y + 13, 90)) for y in range(0, 90, 13)]
            assert np.array_equal(np.concatenate([p[0] for p in parts]), ref.color)
            if ref.alpha is not None:
                assert np.array_equal(np.concatenate([p[1] for p in parts]), ref.alpha)  # type: ignore[misc]
            assert np.array_equal(rows.read(30, 75)[0], ref.color[30:75])  # back up: segments decoded again
            assert (rows.meta.icc, rows.meta.xmp, rows.meta.dpi) == (ref.icc, ref.xmp, ref.dpi)
            assert rows.source_mode == ref.source_mode
    with open_rows(paths["rgb8"]) as rows:  # PNG: read whole
        assert not rows.by_region
    one_strip = tmp_path / "one.tif"
    tifffile.imwrite(one_strip, photo_crop("coffee", 20, 30))
    rotated = tmp_path / "rot.tif"
    tifffile.imwrite(rotated, photo_crop("coffee", 20, 30), tile=(16, 16), extratags=[(274, "H", 1, 6, True)])
    for path in (one_strip, rotated):  # a single strip, or turned by its orientation: read_image's job
        with open_rows(path) as rows:
            assert not rows.by_region
            assert np.array_equal(rows.read(0, rows.height)[0], imageio.read_image(path).color)


@pytest.mark.parametrize("fmt", ["TIFF", "PNG"])
def test_writers_keep_every_depth_and_layout(tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_write, "BIGTIFF_FROM", 1)  # the BigTIFF layout, on a small image
    base = photo_crop("astronaut", 70, 300)
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535), (np.float32, 1.0)):
        for channels, alpha in ((3, True), (1, False)):
            color = (base[..., :channels].astype(np.float64) / 255 * top).astype(dtype)
            a = (base[..., 2].astype(np.float64) / 255 * top).astype(dtype) if alpha else None
            strips = ((color[y : y + 9], None if a is None else a[y : y + 9]) for y in range(0, 70, 9))
            out = tmp_path / f"w.{fmt.lower()}"
            shape = StreamShape(70, 300, channels, np.dtype(dtype), alpha)
            write_streamed(strips, out, shape, StreamMeta(), format=fmt, overwrite=True)
            back = imageio.read_image(out)
            want_c, want_a = color, a
            if fmt == "PNG" and dtype == np.float32:  # as write_image: float PNG is 16-bit
                want_c = (np.clip(color, 0, 1) * 65535 + 0.5).astype(np.uint16)
                want_a = None if a is None else (np.clip(a, 0, 1) * 65535 + 0.5).astype(np.uint16)
            assert np.array_equal(back.color, want_c), (dtype, channels)
            assert want_a is None or (back.alpha is not None and np.array_equal(back.alpha, want_a))
            if fmt == "TIFF":
                with tifffile.TiffFile(out) as tf:
                    assert tf.is_bigtiff and tf.pages[0].is_tiled


def _strips_then_fail(n: int, exc: Exception | None) -> Iterator[tuple[np.ndarray, None]]:
    img = photo_crop("coffee", 64, 64)
    for y in range(0, n, 16):
        yield img[y : y + 16], None
    if exc is not None:
        raise exc


@pytest.mark.parametrize("fmt", ["TIFF", "PNG"])
def test_nothing_is_left_on_any_error(tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / f"o.{fmt.lower()}"
    shape = StreamShape(64, 64, 3, np.dtype(np.uint8), False)
    # the producer fails half way (the model): its own error, unchanged
    with pytest.raises(KeyError, match="model broke"):
        write_streamed(_strips_then_fail(32, KeyError("model broke")), out, shape, StreamMeta(), format=fmt)
    # fewer rows than announced
    with pytest.raises(ImageWriteError, match="ended after 32 of 64 rows"):
        write_streamed(_strips_then_fail(32, None), out, shape, StreamMeta(), format=fmt)

    # the disk fills up after 2 KB: reported as such
    class Full(io.FileIO):
        def write(self, b: object) -> int:
            if self.tell() + len(b) > 2048:  # type: ignore[arg-type]
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(b)  # type: ignore[arg-type]

    monkeypatch.setattr(stream_write, "_open_for_write", lambda p: Full(p, "w+"))
    img = photo_crop("coffee", 64, 64)
    with pytest.raises(ImageWriteError, match="out of disk space"):
        write_streamed([(img[:32], None), (img[32:], None)], out, shape, StreamMeta(), format=fmt)
    assert list(tmp_path.iterdir()) == []


def test_a_real_full_disk_is_reported_per_file(tmp_path: Path) -> None:
    """The kernel refuses the writes (RLIMIT_FSIZE: EFBIG, as a quota would) in a CLI subprocess: the big
    output fails alone, the small one is written, nothing partial remains."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo_crop("astronaut", 16, 16)).save(src / "small.png")
    Image.fromarray(photo_crop("astronaut", 200, 200)).save(src / "big.png")
    out = tmp_path / "out"

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (48_000, 48_000))

    cmd = [sys.executable, "-m", "pixelift.cli", "enhance", str(src), "-o", f"{out}/", "-m", MODEL, "--json"]
    cmd += ["--provider", "cpu", "--format", "tiff", "--stream", "on"]
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit, timeout=300)
    recs = {Path(r["input"]).name: r for r in map(json.loads, proc.stdout.strip().splitlines())}
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert recs["small.png"]["status"] == "ok" and (out / "small.tif").is_file()
    assert recs["big.png"]["status"] == "error" and "out of disk space" in recs["big.png"]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["small.tif"]  # no output, no part file


def test_what_cannot_stream_is_refused_by_name(tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    Image.fromarray(photo_crop("chelsea", 24, 24)).save(src)
    cases = {
        "chain": Enhancer(["waifu2x-photo-x2-noise1", MODEL], provider="cpu"),
        "whole-image statistics": Enhancer("realcugan-se-x2", provider="cpu"),
        "noise map": Enhancer("ffdnet-rgb", provider="cpu", denoise=10),
        "outscale": Enhancer("span-x4-ch48", provider="cpu", outscale=2),
    }
    for words, e in cases.items():
        why = stream.cannot_stream(e)
        assert why is not None and words in why, (words, why)
        with pytest.raises(StreamingUnsupportedError, match=words):
            stream.enhance_file(e, src, tmp_path / "o.tif", stream="on")
    assert stream.cannot_stream(Enhancer("realcugan-se-x2", tiles=TileOptions(sync_se=False))) is None
    with pytest.raises(StreamingUnsupportedError, match="JPEG cannot be written by rows"):
        stream.enhance_file(Enhancer(MODEL), src, tmp_path / "o.jpg", stream="on")
    assert not any(p.name.startswith("o.") for p in tmp_path.iterdir())


def test_jpeg_and_webp_past_their_size_suggest_tiff(tmp_path: Path) -> None:
    """Refused from the header, before a model runs: a 1 x 33,000 px input at x2 is 66,000 px wide."""
    src = tmp_path / "wide.png"
    Image.new("RGB", (33_000, 1), (90, 120, 150)).save(src)
    enh = Enhancer(MODEL, provider="cpu")
    for fmt in ("jpg", "webp"):
        with pytest.raises(OutputTooLargeForFormatError, match="Write TIFF"):
            stream.enhance_file(enh, src, tmp_path / f"o.{fmt}")
    assert enh._loaded is None  # nothing was loaded, let alone run
    res = CliRunner().invoke(main, ["enhance", str(src), "-o", str(tmp_path / "o.jpg"), "-m", MODEL, "--json"])
    assert res.exit_code == 1 and "holds at most 65,535 pixels a side" in json.loads(res.output)["error"]


def test_auto_streams_big_outputs_and_keeps_a_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "a.png"
    Image.fromarray(photo_crop("rocket", 40, 40)).save(src)
    monkeypatch.setattr(stream, "STREAM_FROM_PIXELS", 80 * 80)
    res = CliRunner().invoke(main, ["enhance", str(src), "-o", str(tmp_path / "o.tif"), "-m", MODEL, "--json"])
    rec = json.loads(res.output.splitlines()[-1])  # after any one-time build warnings
    assert res.exit_code == 0 and rec["status"] == "ok" and rec.get("streamed") is True
    # the in-memory limit is lifted for a streamed output; the streamed-output limit applies instead
    enh = Enhancer(MODEL, provider="cpu", max_output_pixels=limits.DEFAULT_MAX_OUTPUT_PIXELS)
    monkeypatch.setenv(stream.ENV_MAX_STREAM_PIXELS, "1000")  # read when an Enhancer is made, as the other limits
    with pytest.raises(ImageTooLargeError, match="streamed-output limit of 1,000"):
        stream.enhance_file(Enhancer(MODEL, provider="cpu"), src, tmp_path / "g.tif", stream="on")
    with pytest.raises(ImageTooLargeError, match="streamed-output limit of 1,000"):
        stream.enhance_file(Enhancer(MODEL, provider="cpu", max_stream_pixels=1000), src, tmp_path / "g.tif", stream="on")
    monkeypatch.delenv(stream.ENV_MAX_STREAM_PIXELS)
    tight = Enhancer(MODEL, provider="cpu", max_output_pixels=2000)  # a limit set lower still holds
    assert stream.stream_limit(tight) == 2000
    assert stream.stream_limit(Enhancer(MODEL, max_output_pixels=None)) is None
    assert stream.stream_limit(enh) == stream.DEFAULT_MAX_STREAM_PIXELS
    assert not (tmp_path / "g.tif").exists()


def test_auto_tile_keeps_the_band_bounded() -> None:
    """For tile 'auto' the band of float output rows stays under BAND_BYTES whatever the width."""
    enh = Enhancer("span-x4-ch48", provider="cpu")
    # the tile choice reads these only (and the session, for a device's own memory: none here)
    lm: Any = SimpleNamespace(
        spec=enh.specs[0], provider="cpu", precision="fp32", selection=SimpleNamespace(session=None)
    )
    # per-architecture overlap (issue 13) where the Enhancer has it, else the one overlap
    overlap = int(enh.overlap_for(enh.specs[0]) if hasattr(enh, "overlap_for") else enh.tiles.overlap or 0)
    for w in (2_000, 10_000, 40_000):
        t = stream.stream_tile(enh, lm, 10_000, w)
        assert t is not None
        band = 3 * 4 * (t + 2 * overlap) * 4 * w * 4
        assert band <= stream.BAND_BYTES or t == 32, (w, t)
        assert t <= stream.STREAM_MAX_TILE


@pytest.fixture(autouse=True)
def _no_stray_parts(tmp_path: Path) -> object:
    yield
    assert not list(tmp_path.rglob("*.part"))


def test_the_python_api_streams_big_outputs_like_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Enhancer.enhance_file`` streams an output past the threshold (the service and API users
    get what the CLI gets), keeps it in memory below it or with stream="off", and refuses "on"
    for a pipeline that cannot stream; the batch path (``enhance_files``) stays in memory."""
    from pixelift.runtime.enhancer import AutoEnhancer

    src = tmp_path / "a.png"
    Image.fromarray(photo_crop("rocket", 40, 40)).save(src)
    enh = Enhancer(MODEL, provider="cpu", tiles=TileOptions(tile=48))
    _, small = enh.enhance_file(src, tmp_path / "small.tif")
    assert not isinstance(small, stream.StreamedResult)
    monkeypatch.setattr(stream, "STREAM_FROM_PIXELS", 80 * 80)
    big_path, big = enh.enhance_file(src, tmp_path / "big.tif")
    assert isinstance(big, stream.StreamedResult) and big.tile == 48
    _, off = enh.enhance_file(src, tmp_path / "off.tif", stream="off")
    assert not isinstance(off, stream.StreamedResult)
    assert np.array_equal(tifffile.imread(big_path), tifffile.imread(tmp_path / "off.tif"))
    (outcome,) = enh.enhance_files([(src, tmp_path / "batch.tif")], prefetch=0)
    assert outcome.error is None and not isinstance(outcome.result, stream.StreamedResult)
    with pytest.raises(StreamingUnsupportedError):
        AutoEnhancer().enhance_file(src, tmp_path / "auto.tif", stream="on")
