"""EXIF parsing and in-place patching, the EXIF orientation (applied to pixels, XMP ``tiff:Orientation`` too), dpi."""

from __future__ import annotations

import math
import re
import struct
from fractions import Fraction
from typing import Any

import numpy as np

from pixelift.runtime.imageio.data import ImageData

_EXIF_HEADER = b"Exif\x00\x00"

# EXIF / TIFF tag numbers
_ORIENTATION = 0x0112
_XRES, _YRES, _RESUNIT = 0x011A, 0x011B, 0x0128
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x8769, 0x8825, 0xA005
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003


def _clean_dpi(dpi: Any) -> tuple[float, float] | None:
    try:
        x, y = (float(v) for v in dpi)
    except (TypeError, ValueError):
        return None
    if not (x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y)):
        return None
    return (x, y)


def _strip_exif_header(exif: bytes | None) -> bytes | None:
    if not exif:
        return None
    while exif.startswith(_EXIF_HEADER):
        exif = exif[6:]
    return exif or None


def _exif_ifd0(exif: bytes) -> tuple[str, dict[int, tuple[int, int, int, int]]]:
    """Parse IFD0 of raw EXIF: endian and {tag: (entry_pos, type, count, value_pos)}."""
    return _exif_ifd(exif, None)


_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}


def _exif_ifd(exif: bytes, offset: int | None) -> tuple[str, dict[int, tuple[int, int, int, int]]]:
    endian = {b"II": "<", b"MM": ">"}[exif[:2]]
    if offset is None:
        (offset,) = struct.unpack_from(endian + "I", exif, 4)
    (n,) = struct.unpack_from(endian + "H", exif, offset)
    entries = {}
    for i in range(n):
        p = offset + 2 + 12 * i
        tag, typ, count = struct.unpack_from(endian + "HHI", exif, p)
        size = _TYPE_SIZE.get(typ, 1) * count
        vpos = p + 8 if size <= 4 else struct.unpack_from(endian + "I", exif, p + 8)[0]
        if vpos + size > len(exif):
            continue
        entries[tag] = (p, typ, count, vpos)
    return endian, entries


def _exif_orientation(exif: bytes | None) -> int:
    if not exif:
        return 1
    try:
        endian, entries = _exif_ifd0(exif)
        if _ORIENTATION in entries:
            _, typ, _, vpos = entries[_ORIENTATION]
            value = struct.unpack_from(endian + ("H" if typ == 3 else "I"), exif, vpos)[0]
            return value if 1 <= value <= 8 else 1
    except (KeyError, struct.error, IndexError):
        pass
    return 1


def _orient(a: np.ndarray, o: int) -> np.ndarray:
    """``ImageOps.exif_transpose`` on an (H, W, ...) array."""
    if o == 2:
        a = a[:, ::-1]
    elif o == 3:
        a = a[::-1, ::-1]
    elif o == 4:
        a = a[::-1]
    elif o == 5:
        a = a.swapaxes(0, 1)
    elif o == 6:
        a = np.rot90(a, -1)
    elif o == 7:
        a = np.rot90(a, 2).swapaxes(0, 1)
    elif o == 8:
        a = np.rot90(a, 1)
    return np.ascontiguousarray(a)


_ORIENTATION_TEXT = {
    2: "mirrored",
    3: "rotated 180°",
    4: "flipped vertically",
    5: "transposed",
    6: "rotated 90° clockwise",
    7: "transversed",
    8: "rotated 90° counter-clockwise",
}
_XMP_ORIENTATION = (
    re.compile(rb"(tiff:Orientation\s*=\s*[\"'])([1-8])([\"'])"),
    re.compile(rb"(<tiff:Orientation>\s*)([1-8])(\s*</tiff:Orientation>)"),
)


def _apply_orientation(data: ImageData) -> None:
    o = _exif_orientation(data.exif)
    if o == 1:
        return
    data.color = _orient(data.color, o)
    if data.alpha is not None:
        data.alpha = _orient(data.alpha, o)
    if o >= 5 and data.dpi:
        data.dpi = (data.dpi[1], data.dpi[0])
    assert data.exif is not None
    thumbnail = _exif_next_ifd(data.exif) is not None
    # the embedded thumbnail keeps the old orientation, which its viewers no longer apply: left out
    data.exif = _patch_exif(data.exif, orientation=1, transposed=o >= 5, drop_thumbnail=True)
    if data.xmp:
        for rx in _XMP_ORIENTATION:
            data.xmp = rx.sub(rb"\g<1>1\g<3>", data.xmp)
    data.notes.append(
        f"EXIF orientation {o} applied to the pixels ({_ORIENTATION_TEXT[o]}); the tag is now 1"
        + ("; its EXIF thumbnail, not turned, was left out" if thumbnail else "")
    )


def _exif_next_ifd(exif: bytes) -> int | None:
    """Where IFD0's link to IFD1 (the thumbnail's directory) is, when it links to one; None otherwise."""
    try:
        endian = {b"II": "<", b"MM": ">"}[exif[:2]]
        (offset,) = struct.unpack_from(endian + "I", exif, 4)
        (n,) = struct.unpack_from(endian + "H", exif, offset)
        link = offset + 2 + 12 * n
        (nxt,) = struct.unpack_from(endian + "I", exif, link)
    except (KeyError, struct.error):
        return None
    return link if 0 < nxt < len(exif) else None


def _patch_exif(
    exif: bytes,
    *,
    orientation: int | None = None,
    scale: float = 1.0,
    size: tuple[int, int] | None = None,
    transposed: bool = False,
    drop_thumbnail: bool = False,
) -> bytes:
    """Patch raw EXIF in place (nothing moves, so maker notes keep their offsets). Unparseable EXIF is returned as is.
    ``transposed``: the pixels' axes were swapped (orientation 5-8): X and Y resolution swap too.
    ``drop_thumbnail``: IFD0 no longer links to IFD1 (its bytes stay, unreferenced)."""
    buf = bytearray(exif)
    try:
        endian, entries = _exif_ifd0(exif)
        if orientation is not None and _ORIENTATION in entries:
            p, typ, _, vpos = entries[_ORIENTATION]
            struct.pack_into(endian + ("H" if typ == 3 else "I"), buf, vpos, orientation)
        if transposed and _XRES in entries and _YRES in entries and entries[_XRES][1] == entries[_YRES][1] == 5:
            xpos, ypos = entries[_XRES][3], entries[_YRES][3]
            buf[xpos : xpos + 8], buf[ypos : ypos + 8] = exif[ypos : ypos + 8], exif[xpos : xpos + 8]
        link = _exif_next_ifd(exif) if drop_thumbnail else None
        if link is not None:
            struct.pack_into(endian + "I", buf, link, 0)
        if scale != 1.0:
            for tag in (_XRES, _YRES):
                if tag in entries and entries[tag][1] == 5:
                    _, _, _, vpos = entries[tag]
                    num, den = struct.unpack_from(endian + "II", exif, vpos)
                    if num and den:
                        ratio = Fraction(num, den) * Fraction(scale).limit_denominator(1_000_000)
                        ratio = ratio.limit_denominator(min(10_000, max(1, (2**32 - 1) // max(1, math.ceil(ratio)))))
                        struct.pack_into(endian + "II", buf, vpos, ratio.numerator, ratio.denominator)
        if size is not None and _EXIF_IFD in entries:
            _, _, _, vpos = entries[_EXIF_IFD]
            (sub_offset,) = struct.unpack_from(endian + "I", exif, vpos)
            _, sub = _exif_ifd(exif, sub_offset)
            for tag, value in ((_PIXEL_X, size[0]), (_PIXEL_Y, size[1])):
                if tag in sub and sub[tag][1] in (3, 4) and sub[tag][2] == 1:
                    p, typ, _, _ = sub[tag]
                    if typ == 3 and value > 0xFFFF:
                        typ = 4
                        struct.pack_into(endian + "H", buf, p + 2, 4)
                    struct.pack_into(endian + "I", buf, p + 8, 0)
                    struct.pack_into(endian + ("H" if typ == 3 else "I"), buf, p + 8, value)
    except (KeyError, struct.error, IndexError, ValueError, ZeroDivisionError):
        return exif
    return bytes(buf)


#: the most data one JPEG APPn segment holds (Pillow's limit), and the headers XMP, EXIF and IPTC add in it
JPEG_SEGMENT = 65533
_JPEG_OVERHEAD = {"xmp": 29, "exif": 6, "iptc": 14 + 12 + 1}
#: what each output format cannot hold at all
_NOT_HELD = {"WEBP": ("iptc",)}


def png_chunks_note(chunks: tuple[tuple[bytes, bytes], ...], fmt: str) -> str | None:
    """The note of a PNG's colour and text chunks that an output in ``fmt`` leaves out, or None."""
    if fmt == "PNG" or not chunks:
        return None
    names = ", ".join(dict.fromkeys(n.decode("latin-1") for n, _ in chunks))
    return f"PNG chunks {names} left out: {fmt} holds no such chunks (a PNG output keeps them)"


def fit_metadata(data: ImageData, fmt: str) -> ImageData:
    """``data`` with the metadata ``fmt`` cannot hold left out, each said in a note: a JPEG segment's 64 KB
    (Lightroom's XMP with its edit history often passes it; the write failed after the models ran), IPTC in
    WebP. Nothing changes for a format that holds it all."""
    from dataclasses import replace

    drop: dict[str, str] = {}
    for key in _NOT_HELD.get(fmt, ()):
        if getattr(data, key):
            drop[key] = f"{key.upper()} left out: {fmt} holds none (TIFF, PNG and JPEG do)"
    note = png_chunks_note(data.png_chunks, fmt)
    if note is not None:
        drop["png_chunks"] = note
    if fmt == "JPEG":
        for key, overhead in _JPEG_OVERHEAD.items():
            value = getattr(data, key)
            if value and len(value) + overhead > JPEG_SEGMENT:
                drop[key] = (
                    f"{key.upper()} of {len(value):,} bytes left out: a JPEG segment holds {JPEG_SEGMENT - overhead:,} "
                    "(TIFF and PNG keep it)"
                )
    if not drop:
        return data
    return replace(
        data,
        xmp=None if "xmp" in drop else data.xmp,
        exif=None if "exif" in drop else data.exif,
        iptc=None if "iptc" in drop else data.iptc,
        png_chunks=() if "png_chunks" in drop else data.png_chunks,
        notes=[*data.notes, *drop.values()],
    )
