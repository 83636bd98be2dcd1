"""pixelift.runtime.imageio: round trips that lose nothing, and clean typed errors for bad input."""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps, IptcImagePlugin, TiffImagePlugin

from pixelift.errors import (
    AlphaNotSupportedError,
    ImageReadError,
    ImageTooLargeError,
    ImageWriteError,
    OutputExistsError,
)
from pixelift.runtime import imageio as iio
from pixelift.runtime.imageio import (
    ImageData,
    default_output_format,
    from_array,
    read_image,
    write_image,
)

H, W = 48, 64
# Pillow warns when it reads IPTC stored as LONGs (as Photoshop and pixelift write it); it reads it fine.
pytestmark = pytest.mark.filterwarnings("ignore:Metadata Warning, tag 33723:UserWarning")
EXIFTOOL = shutil.which("exiftool")


# ------------------------------------------------------------------------------------------------------- fixtures


def photo(name: str = "astronaut", h: int = H, w: int = W) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()[..., :3]
    top, left = (img.shape[0] - h) // 3, (img.shape[1] - w) // 3
    return np.ascontiguousarray(img[top : top + h, left : left + w])


def photo16(name: str = "astronaut") -> np.ndarray:
    """16-bit version of a real photo with values that are not multiples of 257 (so 8-bit reduction shows)."""
    a = photo(name).astype(np.uint16)
    return a * 257 + (a % 13) * 7


def gray(name: str = "camera") -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    top, left = (img.shape[0] - H) // 3, (img.shape[1] - W) // 3
    return np.ascontiguousarray(img[top : top + H, left : left + W])


def alpha_mask(dtype=np.uint8) -> np.ndarray:
    """A smooth real-looking matte: a radial falloff with fully opaque and fully transparent parts."""
    y, x = np.mgrid[0:H, 0:W]
    r = np.hypot((y - H / 2) / H, (x - W / 2) / W)
    a = np.clip(1.6 - 3.2 * r, 0, 1)
    top = np.iinfo(dtype).max
    return np.round(a * top).astype(dtype)


@functools.cache
def srgb_icc() -> bytes:  # cached: lcms stamps the current time into every new profile
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + b"\0" * 4 + _s15(x) + _s15(y) + _s15(z)


def _desc(text: str) -> bytes:
    t = text.encode("ascii") + b"\0"
    return b"desc" + b"\0" * 4 + struct.pack(">I", len(t)) + t + b"\0" * 8 + b"\0" * 3 + b"\0" * 67


def _build_icc(device_class: bytes, space: bytes, pcs: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """A minimal ICC v2.1 profile: header, tag table, 4-byte aligned tag data."""
    table, data = [], b""
    base = 128 + 4 + 12 * len(tags)
    for sig, body in tags:
        data += b"\0" * (-(base + len(data)) % 4)
        table.append(sig + struct.pack(">II", base + len(data), len(body)))
        data += body
    data += b"\0" * (-(base + len(data)) % 4)
    header = (
        struct.pack(">I", base + len(data))
        + b"\0" * 4
        + bytes([2, 0x10, 0, 0])
        + device_class
        + space
        + pcs
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + b"\0" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(table) + data


def prophoto_icc() -> bytes:
    """A ProPhoto-RGB-like matrix/TRC profile (ProPhoto primaries, D50, gamma 1.8)."""
    curv = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(1.8 * 256)) + b"\0\0"
    return _build_icc(
        b"mntr",
        b"RGB ",
        b"XYZ ",
        [
            (b"desc", _desc("ProPhoto-like RGB (pixelift test)")),
            (b"cprt", b"text" + b"\0" * 4 + b"No copyright, test data\0"),
            (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", _xyz(0.7977, 0.2880, 0.0)),
            (b"gXYZ", _xyz(0.1352, 0.7119, 0.0)),
            (b"bXYZ", _xyz(0.0313, 0.0001, 0.8249)),
            (b"rTRC", curv),
            (b"gTRC", curv),
            (b"bTRC", curv),
        ],
    )


def cmyk_swap_icc() -> bytes:
    """A CMYK->Lab lut8 profile whose corners are the naive CMYK->RGB colours with red and blue swapped.

    No CMYK profile ships with Pillow or this machine, so we build one; the swap makes the ICC path
    distinguishable from the naive conversion (pure cyan comes out yellow).
    """
    from skimage.color import rgb2lab

    corners = []
    for c in (0, 1):
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    corners.append(((1 - y) * (1 - k), (1 - m) * (1 - k), (1 - c) * (1 - k)))
    lab = rgb2lab(np.array(corners, dtype=np.float64)[None], illuminant="D50")[0]
    clut = bytes(round(v) for L, a, b in lab for v in (L * 255 / 100, a + 128, b + 128))
    ident = bytes(range(256))
    matrix = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    mft1 = b"mft1" + b"\0" * 4 + bytes([4, 3, 2, 0]) + matrix + ident * 4 + clut + ident * 3
    return _build_icc(
        b"prtr",
        b"CMYK",
        b"Lab ",
        [
            (b"desc", _desc("Swapped CMYK (pixelift test)")),
            (b"cprt", b"text" + b"\0" * 4 + b"No copyright, test data\0"),
            (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
            (b"A2B0", mft1),
        ],
    )


XMP = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
    b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/" '
    b'xmp:CreatorTool="Adobe Photoshop Lightroom Classic 13.2 (Windows)" xmp:Rating="4" '
    b'tiff:Orientation="1" crs:Exposure2012="+0.35"/></rdf:RDF></x:xmpmeta>\n<?xpacket end="w"?>'
)


def iptc_record() -> bytes:
    def ds(rec: int, tag: int, value: bytes) -> bytes:
        return struct.pack(">BBBH", 0x1C, rec, tag, len(value)) + value

    return ds(1, 90, b"\x1b%G") + ds(2, 0, b"\x00\x04") + ds(2, 5, b"Astronaut portrait") + ds(2, 25, b"space")


def make_exif(orientation: int = 1, dpi: int | None = None, size: tuple[int, int] | None = None) -> Image.Exif:
    ex = Image.Exif()
    ex[0x010F] = "Canon"
    ex[0x0110] = "Canon EOS R5"
    ex[0x0132] = "2024:05:01 12:34:56"
    ex[0x0131] = "pixelift tests"
    if orientation != 1:
        ex[0x0112] = orientation
    if dpi:
        ex[0x011A] = dpi
        ex[0x011B] = dpi
        ex[0x0128] = 2
    sub = ex.get_ifd(0x8769)
    sub[0x9003] = "2024:05:01 12:34:56"
    sub[0x9000] = b"0232"
    sub[0xA000] = b"0100"
    sub[0xA001] = 1
    sub[0x829A] = TiffImagePlugin.IFDRational(1, 250)
    sub[0x8827] = 400
    sub[0xA434] = "RF24-70mm F2.8 L IS USM"
    if size:
        sub[0xA002], sub[0xA003] = size
    gps = ex.get_ifd(0x8825)
    gps[0] = b"\x02\x03\x00\x00"
    gps[1] = "N"
    gps[2] = (48.0, 51.0, 24.0)
    return ex


def exif_of(path: Path) -> Image.Exif:
    """EXIF as Pillow sees it, detached from the file (TIFF sub-IFDs are read while it is open)."""
    with Image.open(path) as im:
        raw = im.getexif().tobytes()
    ex = Image.Exif()
    ex.load(raw)
    return ex


# ------------------------------------------------------------------------------------------- 8-bit round trips


@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp"])
def test_rgb8_round_trip_is_bit_exact(tmp_path: Path, suffix: str) -> None:
    rgb = photo("chelsea")
    src = from_array(rgb)
    out = write_image(src, tmp_path / f"out{suffix}", lossless=True)
    back = read_image(out)
    assert back.color.dtype == np.uint8 and back.color.shape == (H, W, 3)
    np.testing.assert_array_equal(back.color, rgb)
    assert back.alpha is None
    with Image.open(out) as im:  # an independent decoder agrees
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), rgb)


def test_bmp_reads_bit_exact_and_converts_to_png(tmp_path: Path) -> None:
    rgb = photo("coffee")
    Image.fromarray(rgb).save(tmp_path / "in.bmp", dpi=(150, 150))
    data = read_image(tmp_path / "in.bmp")
    assert data.source_format == "BMP" and data.source_mode == "RGB"
    np.testing.assert_array_equal(data.color, rgb)
    assert data.dpi == pytest.approx((150, 150), abs=0.1)
    out = write_image(data, tmp_path / "in.png")
    np.testing.assert_array_equal(read_image(out).color, rgb)


def test_webp_lossy_and_jpeg_quality(tmp_path: Path) -> None:
    rgb = photo("astronaut")
    data = from_array(rgb)
    hi = write_image(data, tmp_path / "hi.jpg", quality=95)
    lo = write_image(data, tmp_path / "lo.jpg", quality=20)
    assert lo.stat().st_size < hi.stat().st_size
    back = read_image(hi)
    assert back.source_format == "JPEG"
    diff = np.abs(back.color.astype(int) - rgb.astype(int))
    assert diff.mean() < 3.0
    webp = read_image(write_image(data, tmp_path / "x.webp", quality=90))
    assert np.abs(webp.color.astype(int) - rgb.astype(int)).mean() < 6.0


def test_default_output_format() -> None:
    assert default_output_format("TIFF") == "TIFF"
    for fmt in ("PNG", "JPEG", "WEBP", "BMP"):
        assert default_output_format(fmt) == "PNG"


def test_format_from_source_when_suffix_unknown(tmp_path: Path) -> None:
    data = from_array(photo(), source_format="TIFF")
    out = write_image(data, tmp_path / "result.out")
    assert out.read_bytes()[:4] == b"II*\x00"
    out = write_image(from_array(photo(), source_format="JPEG"), tmp_path / "result2.out")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------- 16-bit and float


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_rgb16_round_trip(tmp_path: Path, suffix: str, with_alpha: bool) -> None:
    rgb = photo16("chelsea")
    alpha = alpha_mask(np.uint16) if with_alpha else None
    out = write_image(from_array(rgb, alpha), tmp_path / f"a{suffix}")
    back = read_image(out)
    assert back.color.dtype == np.uint16 and back.color.max() > 255
    np.testing.assert_array_equal(back.color, rgb)
    if with_alpha:
        assert back.alpha is not None
        np.testing.assert_array_equal(back.alpha, alpha)
        assert back.source_mode == "RGBA;16"
    else:
        assert back.alpha is None and back.source_mode == "RGB;16"


def test_png16_is_readable_by_an_independent_decoder(tmp_path: Path) -> None:
    import png

    rgb, alpha = photo16(), alpha_mask(np.uint16)
    out = write_image(from_array(rgb, alpha, icc=srgb_icc(), dpi=(300.0, 300.0)), tmp_path / "a.png")
    w, h, rows, info = png.Reader(filename=str(out)).asDirect()
    assert (w, h, info["bitdepth"], info["planes"]) == (W, H, 16, 4)
    arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(H, W, 4)
    np.testing.assert_array_equal(arr[..., :3], rgb)
    np.testing.assert_array_equal(arr[..., 3], alpha)


def test_pillow_written_png16_reads_as_16bit(tmp_path: Path) -> None:
    g16 = gray().astype(np.uint16) * 257 + 5
    Image.fromarray(g16).save(tmp_path / "g.png")  # Pillow writes I;16 faithfully
    back = read_image(tmp_path / "g.png")
    assert back.source_mode == "I;16" and back.color.shape == (H, W, 1) and back.color.dtype == np.uint16
    np.testing.assert_array_equal(back.color[..., 0], g16)


def test_float32_tiff_round_trip(tmp_path: Path) -> None:
    import tifffile

    f = photo("rocket").astype(np.float32) / 255.0 * 1.5 - 0.1  # out-of-range values must survive too
    alpha = alpha_mask().astype(np.float32) / 255
    out = write_image(from_array(f, alpha), tmp_path / "f.tif")
    back = read_image(out)
    assert back.color.dtype == np.float32 and back.source_mode == "RGBA;32F"
    np.testing.assert_array_equal(back.color, f)
    np.testing.assert_array_equal(back.alpha, alpha)
    assert tifffile.imread(out).dtype == np.float32


def test_float32_to_png_becomes_16bit(tmp_path: Path) -> None:
    f = photo().astype(np.float32) / 255.0
    back = read_image(write_image(from_array(f), tmp_path / "f.png"))
    assert back.color.dtype == np.uint16
    np.testing.assert_array_equal(back.color, photo().astype(np.uint16) * 257)


# ----------------------------------------------------------------------------------------- alpha, gray, palette


@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp"])
def test_rgba8_round_trip_keeps_straight_alpha(tmp_path: Path, suffix: str) -> None:
    rgb, alpha = photo("coffee"), alpha_mask()
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / f"in{suffix}", lossless=True, exact=True)
    data = read_image(tmp_path / f"in{suffix}")
    assert data.alpha is not None and data.source_mode == "RGBA"
    np.testing.assert_array_equal(data.color, rgb)  # straight: colour under alpha=0 is kept
    np.testing.assert_array_equal(data.alpha, alpha)
    out = write_image(data, tmp_path / f"out{suffix}", lossless=True)
    with Image.open(out) as im:
        assert im.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(im), np.dstack([rgb, alpha]))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_la_round_trip(tmp_path: Path, suffix: str) -> None:
    g, alpha = gray(), alpha_mask()
    Image.fromarray(np.dstack([g, alpha]), "LA").save(tmp_path / "in.png")
    data = read_image(tmp_path / "in.png")
    assert data.source_mode == "LA" and data.color.shape == (H, W, 1)
    np.testing.assert_array_equal(data.color[..., 0], g)
    np.testing.assert_array_equal(data.alpha, alpha)
    back = read_image(write_image(data, tmp_path / f"out{suffix}"))
    assert back.color.shape == (H, W, 1)
    np.testing.assert_array_equal(back.color[..., 0], g)
    np.testing.assert_array_equal(back.alpha, alpha)


def test_la16_png(tmp_path: Path) -> None:
    g = gray().astype(np.uint16) * 257 + 3
    a16 = alpha_mask(np.uint16)
    back = read_image(write_image(from_array(g[..., None], a16), tmp_path / "la16.png"))
    assert back.source_mode == "LA;16"
    np.testing.assert_array_equal(back.color[..., 0], g)
    np.testing.assert_array_equal(back.alpha, a16)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_gray8_and_gray16_stay_gray(tmp_path: Path, suffix: str) -> None:
    g8 = gray()
    g16 = g8.astype(np.uint16) * 257 + 11
    for arr, mode in ((g8, "L"), (g16, "I;16")):
        out = write_image(from_array(arr), tmp_path / f"{mode[0]}{suffix}")
        back = read_image(out)
        assert back.color.shape == (H, W, 1) and back.color.dtype == arr.dtype and back.source_mode == mode
        np.testing.assert_array_equal(back.color[..., 0], arr)
        with Image.open(out) as im:
            assert im.mode in (("L",) if mode == "L" else ("I;16", "I;16B", "I"))


def test_gray_jpeg_stays_gray_and_webp_expands(tmp_path: Path) -> None:
    g = gray()
    Image.fromarray(g).save(tmp_path / "g.jpg", quality=95)
    data = read_image(tmp_path / "g.jpg")
    assert data.color.shape == (H, W, 1) and data.source_mode == "L"
    with Image.open(write_image(data, tmp_path / "g2.jpg")) as im:
        assert im.mode == "L"
    webp = read_image(write_image(data, tmp_path / "g.webp", lossless=True))
    assert webp.color.shape == (H, W, 3)
    np.testing.assert_array_equal(webp.color[..., 0], data.color[..., 0])


def test_one_bit_becomes_l(tmp_path: Path) -> None:
    bits = gray() > 100
    Image.fromarray(bits).save(tmp_path / "b.png")
    data = read_image(tmp_path / "b.png")
    assert data.source_mode == "1" and data.color.dtype == np.uint8 and data.color.shape == (H, W, 1)
    np.testing.assert_array_equal(data.color[..., 0], np.where(bits, 255, 0))
    assert any("1-bit" in n for n in data.notes)


def test_palette_with_transparency_becomes_rgba(tmp_path: Path) -> None:
    pal = Image.fromarray(photo("chelsea")).quantize(16)
    idx = np.asarray(pal)
    t = int(idx[0, 0])
    pal.save(tmp_path / "p.png", transparency=t)
    data = read_image(tmp_path / "p.png")
    assert data.source_mode == "P" and data.color.dtype == np.uint8 and data.alpha is not None
    palette = np.array(pal.getpalette()[: 3 * 16], dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(data.color, palette[idx])
    np.testing.assert_array_equal(data.alpha, np.where(idx == t, 0, 255))
    assert any("palette" in n for n in data.notes)
    # and without transparency: plain RGB
    pal.save(tmp_path / "q.png")
    q = read_image(tmp_path / "q.png")
    assert q.alpha is None
    np.testing.assert_array_equal(q.color, palette[idx])


def test_jpeg_refuses_alpha_unless_flattened(tmp_path: Path) -> None:
    rgb, alpha = photo(), alpha_mask()
    data = from_array(rgb, alpha)
    with pytest.raises(AlphaNotSupportedError, match="flatten_alpha"):
        write_image(data, tmp_path / "a.jpg")
    assert not (tmp_path / "a.jpg").exists()
    out = write_image(data, tmp_path / "a.jpg", flatten_alpha=True, quality=100)
    back = read_image(out).color.astype(int)
    transparent, opaque = alpha == 0, alpha == 255
    assert back[transparent].min() >= 250  # composited on white
    assert np.abs(back[opaque] - rgb[opaque]).mean() < 3


# ---------------------------------------------------------------------------------------------------------- CMYK


def _cmyk_photo() -> Image.Image:
    return Image.fromarray(photo("coffee")).convert("CMYK")


def test_cmyk_jpeg_without_icc_is_converted_naively(tmp_path: Path) -> None:
    cmyk = _cmyk_photo()
    cmyk.save(tmp_path / "c.jpg", quality=95)
    data = read_image(tmp_path / "c.jpg")
    with Image.open(tmp_path / "c.jpg") as im:
        expected = np.asarray(im.convert("RGB"))
    assert data.source_mode == "CMYK" and data.icc is None and data.color.shape == (H, W, 3)
    np.testing.assert_array_equal(data.color, expected)
    assert any("naively" in n for n in data.notes)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_with_icc_uses_the_profile(tmp_path: Path, fmt: str) -> None:
    import tifffile

    icc = cmyk_swap_icc()
    cmyk = _cmyk_photo()
    path = tmp_path / ("c.jpg" if fmt == "JPEG" else "c.tif")
    if fmt == "JPEG":
        cmyk.save(path, quality=95, icc_profile=icc)
    else:
        tifffile.imwrite(path, np.asarray(cmyk), photometric="separated", iccprofile=icc)
    data = read_image(path)
    with Image.open(path) as im:
        decoded = im.convert("CMYK") if fmt == "JPEG" else Image.frombytes("CMYK", im.size, im.tobytes())
        naive = np.asarray(decoded.convert("RGB"))
    transform = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"), "CMYK", "RGB", renderingIntent=0
    )
    expected = np.asarray(ImageCms.applyTransform(decoded, transform))
    assert data.source_mode == "CMYK"
    np.testing.assert_array_equal(data.color, expected)
    assert np.abs(data.color.astype(int) - naive.astype(int)).mean() > 20  # the profile, not the naive formula
    assert data.icc == iio.srgb_profile_bytes()
    assert "sRGB" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(data.icc)))
    assert any("ICC profile" in n and "sRGB" in n for n in data.notes)


def test_srgb_profile_bytes_are_reproducible() -> None:
    import hashlib

    a = iio.srgb_profile_bytes()
    iio.srgb_profile_bytes.cache_clear()
    assert iio.srgb_profile_bytes() == a
    ImageCms.ImageCmsProfile(io.BytesIO(a))  # still a valid profile for lcms
    if any(a[84:100]):  # v4 profile ID = MD5 with flags, intent and ID zeroed
        probe = bytearray(a)
        probe[44:48] = probe[64:68] = bytes(4)
        probe[84:100] = bytes(16)
        assert hashlib.md5(bytes(probe)).digest() == a[84:100]


def test_pure_cyan_through_swapped_profile_is_yellow(tmp_path: Path) -> None:
    Image.new("CMYK", (W, H), (255, 0, 0, 0)).save(tmp_path / "c.jpg", icc_profile=cmyk_swap_icc(), quality=100)
    r, g, b = read_image(tmp_path / "c.jpg").color.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g > 200 and b < 100


# ------------------------------------------------------------------------------------------------------ metadata


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg", ".webp"])
@pytest.mark.parametrize("icc_kind", ["srgb", "prophoto"])
def test_icc_carried_byte_identical(tmp_path: Path, suffix: str, icc_kind: str) -> None:
    icc = srgb_icc() if icc_kind == "srgb" else prophoto_icc()
    out = write_image(from_array(photo(), icc=icc), tmp_path / f"a{suffix}")
    assert read_image(out).icc == icc
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == icc


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_xmp_and_iptc_carried(tmp_path: Path, suffix: str) -> None:
    iptc = iptc_record()
    out = write_image(from_array(photo(), xmp=XMP, iptc=iptc), tmp_path / f"a{suffix}")
    back = read_image(out)
    assert back.xmp == XMP
    assert back.iptc == iptc
    with Image.open(out) as im:
        assert im.info.get("xmp") == XMP or im.getxmp()  # Pillow sees the XMP packet
        if suffix != ".png":  # Pillow reads IPTC from TIFF and JPEG, not from PNG text chunks
            info = IptcImagePlugin.getiptcinfo(im)
            assert info is not None and info[(2, 5)] == b"Astronaut portrait"


def test_png_with_a_large_xmp_packet(tmp_path: Path) -> None:
    """Pillow alone refuses text chunks over 1 MB; a Lightroom XMP with a long history can be that big."""
    big_xmp = XMP.replace(b"<rdf:RDF", b"<!--" + b"history " * 200_000 + b"--><rdf:RDF")
    assert len(big_xmp) > 1_500_000
    back = read_image(write_image(from_array(photo(), xmp=big_xmp), tmp_path / "a.png"))
    assert back.xmp == big_xmp
    np.testing.assert_array_equal(back.color, photo())


def test_webp_carries_xmp_and_exif(tmp_path: Path) -> None:
    exif = iio._strip_exif_header(make_exif().tobytes())
    back = read_image(write_image(from_array(photo(), xmp=XMP, exif=exif), tmp_path / "a.webp", lossless=True))
    assert back.xmp == XMP
    ex = Image.Exif()
    ex.load(back.exif)
    assert ex[0x010F] == "Canon"


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_and_reset(tmp_path: Path, orientation: int) -> None:
    rgb = photo("astronaut")
    ex = make_exif(orientation=orientation, size=(W, H))
    xmp = XMP.replace(b'tiff:Orientation="1"', f'tiff:Orientation="{orientation}"'.encode())
    Image.fromarray(rgb).save(tmp_path / "o.jpg", exif=ex.tobytes(), xmp=xmp, quality=95)
    with Image.open(tmp_path / "o.jpg") as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    data = read_image(tmp_path / "o.jpg")
    np.testing.assert_array_equal(data.color, expected)
    assert iio._exif_orientation(data.exif) == 1
    assert b'tiff:Orientation="1"' in data.xmp
    assert any(f"orientation {orientation}" in n for n in data.notes)
    out = write_image(data, tmp_path / "o.png")
    ex2 = exif_of(out)
    assert ex2.get(0x0112, 1) == 1 and ex2[0x010F] == "Canon"
    sub = ex2.get_ifd(0x8769)
    assert (sub[0xA002], sub[0xA003]) == (data.width, data.height)  # PixelX/YDimension follow the pixels
    with Image.open(out) as im:  # a viewer that honours EXIF orientation shows the same pixels
        np.testing.assert_array_equal(np.asarray(ImageOps.exif_transpose(im)), expected)


def _exif_with_thumbnail(orientation: int, xres: int, yres: int, thumb: bytes) -> bytes:
    """Little-endian EXIF: IFD0 (orientation, X/Y resolution) linked to an IFD1 holding a JPEG thumbnail."""
    ifd0_at, n0 = 8, 3
    rationals_at = ifd0_at + 2 + 12 * n0 + 4
    ifd1_at = rationals_at + 16
    thumb_at = ifd1_at + 2 + 12 * 2 + 4
    out = b"II*\x00" + struct.pack("<I", ifd0_at) + struct.pack("<H", n0)
    out += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    out += struct.pack("<HHII", 0x011A, 5, 1, rationals_at) + struct.pack("<HHII", 0x011B, 5, 1, rationals_at + 8)
    out += struct.pack("<I", ifd1_at) + struct.pack("<IIII", xres, 1, yres, 1)
    out += struct.pack("<H", 2) + struct.pack("<HHII", 0x0201, 4, 1, thumb_at) + struct.pack("<HHII", 0x0202, 4, 1, len(thumb))
    return out + struct.pack("<I", 0) + thumb


def test_a_transposing_orientation_swaps_resolution_and_leaves_out_the_thumbnail(tmp_path: Path) -> None:
    """Orientation 6 turns the pixels: X/Y resolution swap with them (EXIF said 600/300, the PNG's pHYs
    300/600), and the embedded thumbnail, which nobody turns any more, is left out (said)."""
    buf = io.BytesIO()
    Image.fromarray(photo()[:30, :40]).save(buf, "JPEG")
    exif = _exif_with_thumbnail(6, 300, 150, buf.getvalue())
    Image.fromarray(photo()).save(tmp_path / "o6.jpg", exif=b"Exif\x00\x00" + exif, dpi=(300, 150), quality=95)
    data = read_image(tmp_path / "o6.jpg")
    assert any("thumbnail" in n for n in data.notes) and data.dpi == pytest.approx((150, 300))
    ex = Image.Exif()
    ex.load(b"Exif\x00\x00" + data.exif)
    assert ex.get(0x0112) == 1 and (float(ex[0x011A]), float(ex[0x011B])) == (150.0, 300.0)
    assert iio.metadata._exif_next_ifd(data.exif) is None  # IFD0 links to no IFD1


def test_metadata_a_format_cannot_hold_is_left_out_with_a_note(tmp_path: Path) -> None:
    """A JPEG segment holds 64 KB: a larger XMP (Lightroom's with its history) or EXIF failed the write after
    the models ran; WebP holds no IPTC. Left out, said; formats that hold them keep them."""
    big = XMP.replace(b"</x:xmpmeta>", b"<!--" + b"x" * 70_000 + b"--></x:xmpmeta>")
    data = from_array(photo(), xmp=big, iptc=b"\x1c\x02\x00\x00\x02\x00\x04")
    fitted = iio.fit_metadata(data, "JPEG")
    assert fitted.xmp is None and fitted.iptc == data.iptc and any("XMP of" in n for n in fitted.notes)
    write_image(fitted, tmp_path / "a.jpg")
    assert iio.fit_metadata(data, "WEBP").iptc is None and any("IPTC" in n for n in iio.fit_metadata(data, "WEBP").notes)
    for fmt in ("PNG", "TIFF"):
        assert iio.fit_metadata(data, fmt) is data


def test_orientation_rotates_alpha_and_16bit_png(tmp_path: Path) -> None:
    rgb, alpha = photo16(), alpha_mask(np.uint16)
    exif = iio._strip_exif_header(make_exif(orientation=6).tobytes())
    write_image(from_array(rgb, alpha, exif=exif), tmp_path / "o.png")
    back = read_image(tmp_path / "o.png")
    np.testing.assert_array_equal(back.color, np.rot90(rgb, -1))
    np.testing.assert_array_equal(back.alpha, np.rot90(alpha, -1))


def test_dpi_scaling(tmp_path: Path) -> None:
    ex = make_exif(dpi=300)
    Image.fromarray(photo()).save(tmp_path / "in.jpg", dpi=(300, 300), exif=ex.tobytes())
    data = read_image(tmp_path / "in.jpg")
    assert data.dpi == pytest.approx((300, 300))
    for suffix in (".png", ".tif", ".jpg"):
        out = write_image(data, tmp_path / f"x4{suffix}", scale_dpi=4.0)
        assert read_image(out).dpi == pytest.approx((1200, 1200), rel=1e-4)
        with Image.open(out) as im:
            assert tuple(im.info["dpi"]) == pytest.approx((1200, 1200), rel=1e-4)
        exif = exif_of(out)
        assert float(exif[0x011A]) == pytest.approx(1200) and float(exif[0x011B]) == pytest.approx(1200)
    # no scaling: unchanged
    assert read_image(write_image(data, tmp_path / "x1.png")).dpi == pytest.approx((300, 300), rel=1e-4)


def test_exif_sub_ifds_survive_jpeg_to_tiff_to_jpeg(tmp_path: Path) -> None:
    import tifffile

    Image.fromarray(photo()).save(tmp_path / "in.jpg", exif=make_exif().tobytes(), quality=95)
    tif = write_image(read_image(tmp_path / "in.jpg"), tmp_path / "mid.tif")
    ex = exif_of(tif)
    assert (ex[0x010F], ex[0x0110], ex[0x0132]) == ("Canon", "Canon EOS R5", "2024:05:01 12:34:56")
    sub = ex.get_ifd(0x8769)
    assert sub[0x9003] == "2024:05:01 12:34:56" and sub[0x8827] == 400 and float(sub[0x829A]) == pytest.approx(1 / 250)
    assert ex.get_ifd(0x8825)[1] == "N"
    with tifffile.TiffFile(tif) as t:  # tifffile follows the Exif IFD pointer too
        tags = t.pages.first.tags
        assert tags["ExifTag"].value["DateTimeOriginal"] == "2024:05:01 12:34:56"
        assert tags["GPSTag"].value["GPSLatitudeRef"] == "N"
    jpg = write_image(read_image(tif), tmp_path / "out.jpg")
    ex = exif_of(jpg)
    assert ex[0x0110] == "Canon EOS R5" and ex.get_ifd(0x8769)[0xA434] == "RF24-70mm F2.8 L IS USM"


def test_lightroom_edit_in_round_trip(tmp_path: Path) -> None:
    """16-bit ProPhoto TIFF with ICC, EXIF and XMP in (written by tifffile, as an editor would) -> same out."""
    import tifffile

    rgb = photo16("astronaut")
    icc = prophoto_icc()
    tags = [
        (271, "s", 0, "Canon", True),
        (272, "s", 0, "Canon EOS R5", True),
        (305, "s", 0, "Adobe Photoshop Lightroom Classic 13.2 (Windows)", True),
        (306, "s", 0, "2024:05:01 12:34:56", True),
        (315, "s", 0, "A. Photographer", True),
        (700, "B", len(XMP), XMP, True),
        (33723, 7, len(iptc_record()), iptc_record(), True),
    ]
    src = tmp_path / "IMG_0001-Edit.tif"
    tifffile.imwrite(
        src,
        rgb,
        photometric="rgb",
        iccprofile=icc,
        resolution=(240, 240),
        resolutionunit="INCH",
        compression="zlib",
        metadata=None,
        extratags=tags,
    )
    data = read_image(src)
    assert data.source_mode == "RGB;16" and data.icc == icc and data.xmp == XMP and data.dpi == (240, 240)
    out = write_image(data, tmp_path / "IMG_0001-Edit-pixelift.tif")
    back = read_image(out)
    np.testing.assert_array_equal(back.color, rgb)
    assert back.color.dtype == np.uint16
    assert back.icc == icc and back.xmp == XMP and back.iptc == iptc_record() and back.dpi == (240, 240)
    ex = exif_of(out)
    assert ex[0x010F] == "Canon" and ex[0x0110] == "Canon EOS R5" and ex[0x0132] == "2024:05:01 12:34:56"
    assert ex[0x013B] == "A. Photographer"
    with tifffile.TiffFile(out) as t:
        page = t.pages.first
        assert page.dtype == np.uint16 and page.tags["InterColorProfile"].value == icc
        assert page.tags["XMP"].value == XMP and page.tags["Make"].value == "Canon"
        assert "ImageDescription" not in page.tags  # no tifffile shape JSON leaks into the photo


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed")
@pytest.mark.parametrize("suffix", [".tif", ".png", ".jpg"])
def test_exiftool_reads_our_metadata(tmp_path: Path, suffix: str) -> None:
    exif = iio._strip_exif_header(make_exif(dpi=300).tobytes())
    rgb = photo16() if suffix != ".jpg" else photo()
    data = from_array(rgb, exif=exif, xmp=XMP, iptc=iptc_record(), icc=prophoto_icc(), dpi=(300.0, 300.0))
    out = write_image(data, tmp_path / f"a{suffix}", scale_dpi=2)

    def exiftool(*args: str) -> dict:
        proc = subprocess.run([str(EXIFTOOL), "-j", *args, str(out)], capture_output=True, text=True, timeout=60)
        return json.loads(proc.stdout)[0]

    report = exiftool("-validate", "-warning", "-error", "-a")
    problems = [
        str(v)
        for k, v in report.items()
        if k != "SourceFile"
        and k != "Validate"
        # EXIF content we carry as given, and Deflate, which strict TIFF 6 baseline validation does not list
        and "Missing required" not in str(v)
        and "0x0103 Compression" not in str(v)
    ]
    assert not problems, report
    values = exiftool("-a")
    assert values["Make"] == "Canon" and values["Model"] == "Canon EOS R5"
    assert values["DateTimeOriginal"] == "2024:05:01 12:34:56"
    assert values["ObjectName"] == "Astronaut portrait"
    assert values["CreatorTool"].startswith("Adobe Photoshop Lightroom")
    assert values["ProfileDescription"] == "ProPhoto-like RGB (pixelift test)"
    assert values["XResolution"] == 600
    assert values["GPSLatitudeRef"] == "North"
    if suffix != ".jpg":
        assert values.get("BitsPerSample", values.get("BitDepth")) in (16, "16 16 16")


# ------------------------------------------------------------------------------------------------- helpers / API


def test_from_array_like_keeps_metadata_for_an_upscaled_result(tmp_path: Path) -> None:
    src = from_array(photo16(), icc=prophoto_icc(), xmp=XMP, dpi=(300.0, 300.0), source_format="TIFF")
    big = np.repeat(np.repeat(src.color, 2, axis=0), 2, axis=1)
    result = from_array(big, like=src)
    assert result.icc == src.icc and result.source_format == "TIFF"
    back = read_image(write_image(result, tmp_path / "up.tif", scale_dpi=2))
    np.testing.assert_array_equal(back.color, big)
    assert back.dpi == (600, 600) and back.icc == src.icc
    assert iio.from_float32(iio.to_float32(src.color), np.uint16).tolist() == src.color.tolist()
    assert "64x48x3 uint16" in repr(src)


def test_pil_bridge_and_suffix_helpers(tmp_path: Path) -> None:
    assert iio.format_for_path("a/b.TIF") == "TIFF" and iio.format_for_path("x.bmp") == "BMP"
    assert iio.format_for_path("x.gif") is None
    assert [iio.suffix_for(f) for f in ("png", "TIFF", "jpg", "WEBP")] == [".png", ".tif", ".jpg", ".webp"]
    im = Image.fromarray(np.dstack([photo(), alpha_mask()]), "RGBA")
    im.info.update(icc_profile=srgb_icc(), dpi=(72, 72))
    data = iio.from_pil(im)
    assert data.source_mode == "RGBA" and data.icc == srgb_icc() and data.dpi == (72, 72)
    back = iio.to_pil(data)
    assert back.mode == "RGBA" and back.info["icc_profile"] == srgb_icc()
    np.testing.assert_array_equal(np.asarray(back), np.asarray(im))
    g16 = iio.to_pil(ImageData.from_arrays(gray().astype(np.uint16)[..., None] * 257))
    assert g16.mode == "I;16"
    assert iio.to_pil(from_array(photo16())).mode == "RGB"  # Pillow has no 16-bit RGB


def test_imageio_does_not_import_torch() -> None:
    code = "import sys, pixelift.runtime.imageio; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


# ------------------------------------------------------------------------------------------------------ bad input


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file") as e:
        read_image(tmp_path / "nope.png")
    assert "nope.png" in str(e.value)


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty \(0 bytes\)") as e:
        read_image(tmp_path / "empty.png")
    assert "empty.png" in str(e.value)


def test_text_file_is_unsupported(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("these are not the pixels you are looking for\n")
    with pytest.raises(ImageReadError, match=r"not a supported image.*text file") as e:
        read_image(tmp_path / "notes.jpg")
    assert "notes.jpg" in str(e.value)


def test_gif_is_unsupported(tmp_path: Path) -> None:
    Image.fromarray(photo()).save(tmp_path / "a.gif")
    with pytest.raises(ImageReadError, match="GIF"):
        read_image(tmp_path / "a.gif")


def test_corrupt_png_bytes(tmp_path: Path) -> None:
    raw = bytearray(_png_bytes(photo()))
    idat = raw.find(b"IDAT")
    raw[idat + 20 : idat + 60] = bytes(40)  # clobber compressed data; the CRC no longer matches
    (tmp_path / "bad.png").write_bytes(bytes(raw))
    with pytest.raises(ImageReadError, match=r"bad\.png"):
        read_image(tmp_path / "bad.png")


def test_corrupt_png_data_with_valid_crc(tmp_path: Path) -> None:
    raw = _png_bytes(photo())
    idat = raw.find(b"IDAT")
    (n,) = struct.unpack(">I", raw[idat - 4 : idat])
    body = bytes(b ^ 0x5A for b in raw[idat + 4 : idat + 4 + n])
    chunk = struct.pack(">I", n) + b"IDAT" + body + struct.pack(">I", zlib.crc32(b"IDAT" + body))
    (tmp_path / "bad.png").write_bytes(raw[: idat - 4] + chunk + raw[idat + 8 + n :])
    with pytest.raises(ImageReadError, match=r"bad\.png"):
        read_image(tmp_path / "bad.png")


def test_corrupt_jpeg_bytes(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    with pytest.raises(ImageReadError, match=r"bad\.jpg"):
        read_image(tmp_path / "bad.jpg")


def test_truncated_png(tmp_path: Path) -> None:
    raw = _png_bytes(photo())
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError, match="truncated") as e:
        read_image(tmp_path / "cut.png")
    assert "cut.png" in str(e.value)


def test_truncated_16bit_png(tmp_path: Path) -> None:
    out = write_image(from_array(photo16()), tmp_path / "full.png")
    raw = out.read_bytes()
    (tmp_path / "cut16.png").write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(ImageReadError, match=r"cut16\.png"):
        read_image(tmp_path / "cut16.png")


def test_truncated_jpeg(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(photo()).save(buf, "JPEG", quality=95)
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.jpg"):
        read_image(tmp_path / "cut.jpg")


def test_truncated_tiff(tmp_path: Path) -> None:
    out = write_image(from_array(photo16()), tmp_path / "full.tif", compression=None)
    raw = out.read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[:100])
    with pytest.raises(ImageReadError, match=r"cut\.tif"):
        read_image(tmp_path / "cut.tif")


def test_decompression_bomb_header(tmp_path: Path) -> None:
    """A 100k x 100k PNG header over a few bytes of data is rejected before decoding."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    (tmp_path / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    with pytest.raises(ImageTooLargeError, match=r"--max-pixels N\|none, PIXELIFT_MAX_PIXELS=N\|none, or max_pixels=None") as e:
        read_image(tmp_path / "bomb.png")
    assert "bomb.png" in str(e.value) and "100000x100000" in str(e.value)
    assert isinstance(e.value, ImageReadError)


@pytest.mark.parametrize("suffix", [".jpg", ".tif", ".webp", ".bmp", ".png"])
def test_max_pixels_limit_and_overrides(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / f"a{suffix}"
    Image.fromarray(photo()).save(path)
    with pytest.raises(ImageTooLargeError):
        read_image(path, max_pixels=1000)
    assert read_image(path, max_pixels=None).width == W
    monkeypatch.setenv("PIXELIFT_MAX_PIXELS", "1000")
    with pytest.raises(ImageTooLargeError):
        read_image(path)
    monkeypatch.setenv("PIXELIFT_MAX_PIXELS", "0")
    assert read_image(path).width == W
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own guard is restored


def test_output_exists_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="overwrite=True") as e:
        write_image(from_array(photo()), out)
    assert isinstance(e.value, FileExistsError) and "out.png" in str(e.value)
    assert out.read_bytes() == b"precious"
    write_image(from_array(photo()), out, overwrite=True)
    np.testing.assert_array_equal(read_image(out).color, photo())


@pytest.mark.parametrize("link", [True, False])
def test_an_output_written_meanwhile_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link: bool
) -> None:
    """Another run publishing the same output while this one encodes (two CLI runs, two service jobs):
    the check before the work saw no file; the publish refuses to replace it (with or without hard links)."""
    from pixelift.runtime.imageio import write as write_mod

    out = tmp_path / "same.png"
    encode = write_mod._WRITERS["PNG"]

    def racing(tmp: Path, job: object) -> None:
        encode(tmp, job)
        out.write_bytes(b"the other run's result")

    monkeypatch.setitem(write_mod._WRITERS, "PNG", racing)
    def no_links(*_args: object) -> None:
        raise OSError(errno.EOPNOTSUPP, "hard links not supported")

    if not link:  # a filesystem without hard links: checked, then renamed
        monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(OutputExistsError, match="meanwhile"):
        write_image(from_array(photo()), out)
    assert out.read_bytes() == b"the other run's result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.png"]  # no part file left
    write_image(from_array(photo()), out, overwrite=True)  # asked to: replaced
    assert out.read_bytes() != b"the other run's result"


@pytest.mark.parametrize("overwrite", [False, True])
def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool) -> None:
    import tifffile

    def broken_imwrite(path, *args, **kwargs):
        Path(path).write_bytes(b"II*\x00 half a tiff")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(tifffile, "imwrite", broken_imwrite)
    out = tmp_path / "out.tif"
    if overwrite:
        out.write_bytes(b"old")
    with pytest.raises(ImageWriteError, match="disk full") as e:
        write_image(from_array(photo()), out, overwrite=overwrite)
    assert "out.tif" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out.tif"] if overwrite else [])
    if overwrite:
        assert out.read_bytes() == b"old"


def test_png_encoder_error_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import imagecodecs

    def boom(*args, **kwargs):
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(imagecodecs, "png_encode", boom)
    with pytest.raises(ImageWriteError, match="encoder exploded"):
        write_image(from_array(photo()), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_bad_write_arguments(tmp_path: Path) -> None:
    data = from_array(photo())
    with pytest.raises(ImageWriteError, match="cannot write GIF"):
        write_image(data, tmp_path / "a.gif", format="GIF")
    with pytest.raises(ValueError, match="quality"):
        write_image(data, tmp_path / "a.jpg", quality=0)
    with pytest.raises(ValueError, match="must be"):
        write_image(ImageData(color=photo()[..., :2]), tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


def _with_chunks(png: bytes, chunks: list[tuple[bytes, bytes]]) -> bytes:
    from pixelift.runtime.imageio.png import _png_chunk

    ihdr_end = 8 + 12 + struct.unpack_from(">I", png, 8)[0]
    return png[:ihdr_end] + b"".join(_png_chunk(n, b) for n, b in chunks) + png[ihdr_end:]


def _chunk_list(png: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(png):
        (n,) = struct.unpack_from(">I", png, pos)
        out.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + n]))
        pos += 12 + n
    return out


def test_png_colour_and_text_chunks_are_carried(tmp_path: Path) -> None:
    """gAMA/cHRM (a PNG without ICC is shown by them), sRGB and text (author, comment) came back dropped,
    without a word. A PNG output keeps them as they were, streamed too; another format says it left them out."""
    from pixelift.runtime.imageio.stream_read import open_rows
    from pixelift.runtime.imageio.stream_write import StreamShape, write_streamed

    buf = io.BytesIO()
    Image.fromarray(photo()).save(buf, "PNG")
    chunks = [
        (b"gAMA", struct.pack(">I", 100000)),
        (b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)),
        (b"tEXt", b"Author\x00A. Photographer"),
        (b"tIME", struct.pack(">HBBBBB", 2020, 1, 2, 3, 4, 5)),  # the file's last change: not carried
    ]
    src = tmp_path / "g.png"
    src.write_bytes(_with_chunks(buf.getvalue(), chunks))
    data = read_image(src)
    out = write_image(data, tmp_path / "o.png")
    kept = [c for c in _chunk_list(out.read_bytes()) if c[0] in (b"gAMA", b"cHRM", b"tEXt", b"tIME")]
    assert kept == chunks[:3]
    with open_rows(src) as rows:
        shape = StreamShape(rows.height, rows.width, rows.channels, rows.dtype, rows.has_alpha)
        strips = iter([rows.read(0, rows.height)])
        streamed = write_streamed(strips, tmp_path / "s.png", shape, rows.meta, format="PNG")
    assert [c for c in _chunk_list(streamed.read_bytes()) if c[0] in (b"gAMA", b"cHRM", b"tEXt")] == chunks[:3]
    fitted = iio.fit_metadata(data, "TIFF")
    assert fitted.png_chunks == () and any("gAMA, cHRM, tEXt left out" in n for n in fitted.notes)


def test_webp_at_quality_100_is_lossless(tmp_path: Path) -> None:
    """The CLI's only WebP knob is --quality: libwebp's lossy 100 still loses, so 100 writes lossless."""
    rgb = photo()
    assert np.array_equal(read_image(write_image(from_array(rgb), tmp_path / "a.webp", quality=100)).color, rgb)
    assert not np.array_equal(read_image(write_image(from_array(rgb), tmp_path / "b.webp", quality=99)).color, rgb)


def test_a_32_bit_bmp_keeps_its_alpha(tmp_path: Path) -> None:
    """Pillow writes RGBA as a 32-bit BI_RGB BMP, whose fourth byte it then reads as unused: the alpha was lost.
    A fourth byte that is not all zero is alpha (as browsers read it); an all-zero one is padding."""
    rgb = photo()
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[8:40, 10:50] = 255
    alpha[20:30, 20:30] = 128
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "a.bmp")
    data = read_image(tmp_path / "a.bmp")
    assert data.alpha is not None and np.array_equal(data.alpha, alpha) and np.array_equal(data.color, rgb)
    Image.fromarray(rgb).save(tmp_path / "b.bmp")  # 24-bit: no fourth byte
    assert read_image(tmp_path / "b.bmp").alpha is None
