"""JPEG, WebP and BMP through Pillow; IPTC goes into a Photoshop APP13 segment written here."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixelift.errors import ImageWriteError
from pixelift.runtime.imageio.data import ImageData, _WriteJob
from pixelift.runtime.imageio.guards import _check_size, _pil_open
from pixelift.runtime.imageio.metadata import _EXIF_HEADER, _clean_dpi, _strip_exif_header
from pixelift.runtime.imageio.pil import _from_pil


def _read_pillow(path: Path, fmt: str, limit: int | None) -> ImageData:
    notes: list[str] = []
    with _pil_open(path, fmt) as im:
        _check_size(path, im.width, im.height, limit)
        n_frames = getattr(im, "n_frames", 1)
        if n_frames > 1:
            notes.append(f"only the first of {n_frames} frames was read")
        im.load()
        info = im.info
        icc = info.get("icc_profile") or None
        exif = _strip_exif_header(info.get("exif"))
        xmp = info.get("xmp") or None
        if isinstance(xmp, str):
            xmp = xmp.encode("utf-8")
        photoshop = info.get("photoshop")
        iptc = photoshop.get(0x0404) if isinstance(photoshop, dict) else None
        dpi = _clean_dpi(info.get("dpi"))
        mode = im.mode
        color, alpha, icc = _from_pil(im, icc, notes)
    return ImageData(color, alpha, icc, exif, xmp, iptc or None, dpi, fmt, mode, notes)


def _read_jpeg(path: Path, limit: int | None) -> ImageData:
    return _read_pillow(path, "JPEG", limit)


def _read_webp(path: Path, limit: int | None) -> ImageData:
    return _read_pillow(path, "WEBP", limit)


def _read_bmp(path: Path, limit: int | None) -> ImageData:
    data = _read_pillow(path, "BMP", limit)
    if data.alpha is None and data.color.shape[2] == 3:
        alpha = _bmp_fourth_byte(path, data.width, data.height)
        if alpha is not None:
            data.alpha = alpha
            data.notes.append("32-bit BMP: its fourth byte, not all zero, read as alpha (as browsers read it)")
    return data


def _bmp_fourth_byte(path: Path, width: int, height: int) -> np.ndarray | None:
    """A 32-bit BI_RGB BMP's fourth byte per pixel (HW), when any is not zero; else None. The format calls it
    unused and Pillow reads RGB, but Pillow itself writes RGBA that way, and browsers take it as alpha."""
    raw = path.read_bytes()
    if len(raw) < 54 or raw[:2] != b"BM" or struct.unpack_from("<I", raw, 14)[0] < 40:
        return None
    offset = struct.unpack_from("<I", raw, 10)[0]
    w, h = struct.unpack_from("<ii", raw, 18)
    bits, compression = struct.unpack_from("<HI", raw, 28)
    if bits != 32 or compression != 0 or (w, abs(h)) != (width, height) or offset + 4 * w * abs(h) > len(raw):
        return None
    fourth = np.frombuffer(raw, np.uint8, count=4 * w * abs(h), offset=offset).reshape(abs(h), w, 4)[..., 3]
    if not fourth.any():
        return None
    return np.ascontiguousarray(fourth[::-1] if h > 0 else fourth)  # rows stored bottom-up unless the height is negative


def _write_jpeg(tmp: Path, job: _WriteJob) -> None:
    color, icc, exif, xmp, iptc, dpi, quality = job.color, job.icc, job.exif, job.xmp, job.iptc, job.dpi, job.quality
    im = Image.fromarray(color[:, :, 0] if color.shape[2] == 1 else color)
    kwargs: dict[str, Any] = {"quality": quality, "subsampling": 0 if quality >= 90 else 2}
    if icc:
        kwargs["icc_profile"] = icc
    if exif:
        kwargs["exif"] = _EXIF_HEADER + exif
    if xmp:
        kwargs["xmp"] = xmp
    if dpi:
        kwargs["dpi"] = dpi
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kwargs)
    out = buf.getvalue()
    if iptc:
        out = _jpeg_insert_iptc(out, iptc)
    tmp.write_bytes(out)


def _jpeg_insert_iptc(jpeg: bytes, iptc: bytes) -> bytes:
    """Add a Photoshop APP13 segment holding the IPTC-IIM record (resource 0x0404) after the APPn segments."""
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(iptc)) + iptc
    if len(iptc) % 2:
        resource += b"\x00"
    payload = b"Photoshop 3.0\x00" + resource
    if len(payload) + 2 > 0xFFFF:
        raise ImageWriteError(f"IPTC data too large for a JPEG segment ({len(iptc)} bytes)")
    pos = 2
    while pos + 4 <= len(jpeg) and jpeg[pos] == 0xFF and 0xE0 <= jpeg[pos + 1] <= 0xEF:
        pos += 2 + struct.unpack_from(">H", jpeg, pos + 2)[0]
    return jpeg[:pos] + b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload + jpeg[pos:]


def _write_webp(tmp: Path, job: _WriteJob) -> None:
    color, alpha, icc, exif, xmp = job.color, job.alpha, job.icc, job.exif, job.xmp
    # quality 100 is lossless WebP (bit-exact): libwebp's lossy 100 still loses, and nothing above it exists
    quality, lossless = job.quality, job.lossless or job.quality == 100
    arr = color if alpha is None else np.concatenate([color, alpha[:, :, None]], axis=2)
    im = Image.fromarray(np.ascontiguousarray(arr))
    kwargs: dict[str, Any] = {"quality": quality, "lossless": lossless, "exact": True}
    if icc:
        kwargs["icc_profile"] = icc
    if exif:
        kwargs["exif"] = exif
    if xmp:
        kwargs["xmp"] = xmp
    buf = io.BytesIO()
    im.save(buf, "WEBP", **kwargs)
    tmp.write_bytes(buf.getvalue())
