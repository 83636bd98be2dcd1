"""Image I/O that loses nothing: bit depth, alpha, ICC profile, EXIF, XMP, IPTC and DPI survive a round trip.

Libraries: Pillow for JPEG, WebP, BMP and 8-bit PNG pixels; tifffile for every TIFF; imagecodecs for 16-bit PNG.
PNG library choice: imagecodecs (libpng in C) over pypng (pure Python, far slower on photo-sized 16-bit images);
it is kept by the tifffile author and tifffile already relies on it for compressed TIFFs, so it costs no extra stack.
PNG metadata chunks (iCCP, eXIf, iTXt XMP, zTXt IPTC, pHYs) are parsed and written here, the same way for 8 and 16 bits.

What :func:`read_image` hands back, per source mode (``color`` is (H, W, 3) RGB or (H, W, 1) gray; every
conversion adds a line to ``notes``; CMYK with an ICC uses the perceptual intent and the output ICC becomes
``ImageCms.createProfile("sRGB")``; without one it is the naive formula and no ICC is attached):

================================  ===============================  ======================  ===============================
Source (``source_mode``)          ``color``                        ``alpha``               Notes / written back as
================================  ===============================  ======================  ===============================
``1`` (1-bit PNG/BMP/TIFF)        (H,W,1) uint8, 0/255             none                    note; gray 8-bit
``L``, 2/4-bit gray               (H,W,1) uint8 (low bits scaled)  none                    gray 8-bit
``I;16`` (PNG/TIFF)               (H,W,1) uint16                   none                    gray 16-bit (PNG/TIFF)
``F`` (float TIFF)                (H,W,1) float32                  none                    float32 TIFF
``LA`` / ``LA;16``                (H,W,1) uint8/uint16             (H,W) same dtype        gray + alpha
``P`` / ``PA`` (palette)          (H,W,3) uint8                    (H,W) if transparent    note; RGB(A) 8-bit
``L``/``RGB`` + tRNS key          as the mode                      0 at the key, else max  note
``RGB``, ``RGB;16``, ``RGB;32F``  (H,W,3) uint8/uint16/float32     none                    same depth (PNG 8/16, TIFF all)
``RGBA``, ``RGBA;16``, ...        (H,W,3) same dtype               (H,W) straight          same depth + alpha
premultiplied (TIFF, ``RGBa``)    un-premultiplied                 (H,W) straight          note
12-bit TIFF                       uint16 scaled to 0..65535        as color                note
float16/float64 TIFF              float32                          as color                note
``CMYK`` + CMYK ICC (JPEG/TIFF)   (H,W,3) uint8 via ImageCms       kept (TIFF)             icc -> sRGB, note
``CMYK`` without usable ICC       (H,W,3) uint8, naive             kept (TIFF)             icc None, note
16-bit CMYK TIFF                  as above, via 8-bit CMYK         8-bit                   note
JPEG-in-TIFF YCbCr, ``RGBX``      (H,W,3) uint8                    none                    RGB
================================  ===============================  ======================  ===============================

What :func:`write_image` does per output format:

======  =============================  ==================  ==========================================================
Format  Samples                        Alpha               Metadata
======  =============================  ==================  ==========================================================
PNG     uint8, uint16 (float32 -> 16)  RGBA / LA           iCCP, eXIf, iTXt XMP, pHYs, zTXt ``Raw profile type iptc``
TIFF    uint8, uint16, float32 (zlib)  unassociated extra  34675 ICC, 700 XMP, 33723 IPTC, resolution (inch),
                                                           EXIF IFD0 text tags + Exif/GPS sub-IFDs (34665/34853)
JPEG    uint8 (deeper is reduced)      raises (see below)  ICC APP2, EXIF APP1, XMP APP1, IPTC APP13, JFIF dpi
WEBP    uint8 RGB (gray expanded)      RGBA (``exact``)    ICCP, EXIF, XMP (no IPTC; dpi only via EXIF)
======  =============================  ==================  ==========================================================

JPEG cannot hold alpha: writing alpha raises :class:`~pixelift.errors.AlphaNotSupportedError` unless
``flatten_alpha=True``, which composites on white. JPEG uses 4:4:4 chroma at quality >= 90. 16-bit and float data
written to JPEG/WebP are rounded to 8 bits (those formats hold no more); ``lossless=True`` makes WebP bit-exact.
TIFF uses Adobe Deflate (``compression=``), with the horizontal predictor for integer samples.

EXIF is held as TIFF-structured bytes *without* the ``Exif\\0\\0`` APP1 header (Pillow's ``Image.Exif().load`` takes it
either way). On read the EXIF orientation is applied to the pixels (``ImageOps.exif_transpose`` semantics) and the tag
is patched to 1 in place (XMP ``tiff:Orientation`` too), so maker notes and offsets stay untouched. On write, EXIF
X/YResolution and the output dpi are multiplied by ``scale_dpi``, and PixelX/YDimension is set to the written size.

Safety: writes go to a temp file renamed into place (:func:`pixelift.paths.atomic_path`); an existing output raises
:class:`~pixelift.errors.OutputExistsError` unless ``overwrite=True``. Images over ``max_pixels`` (default
:data:`DEFAULT_MAX_PIXELS`, 200 MP) raise :class:`~pixelift.errors.ImageTooLargeError` before any pixel is decoded;
pass ``max_pixels=None`` or set ``PIXELIFT_MAX_PIXELS`` (a number, or ``0``/``none`` for no limit; it replaces the
default, an explicit other ``max_pixels`` wins). Pillow's own guard is switched off, under a lock, only while
``Image.open`` reads a header, and ours is applied to the size it reports. Missing, empty, corrupt, truncated and
unsupported files raise :class:`~pixelift.errors.ImageReadError` naming the path.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import math
import os
import re
import stat
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image, ImageCms

from pixelift import limits
from pixelift.errors import (
    AlphaNotSupportedError,
    ImageReadError,
    ImageTooLargeError,
    ImageWriteError,
    OutputExistsError,
    PixeliftError,
)
from pixelift.paths import atomic_path

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ENV_MAX_PIXELS",
    "READ_FORMATS",
    "WRITE_FORMATS",
    "ImageData",
    "default_output_format",
    "format_for_path",
    "from_array",
    "from_float32",
    "from_pil",
    "read_image",
    "srgb_profile_bytes",
    "suffix_for",
    "to_array",
    "to_float32",
    "to_pil",
    "write_image",
]

DEFAULT_MAX_PIXELS = limits.DEFAULT_MAX_PIXELS
ENV_MAX_PIXELS = limits.ENV_MAX_PIXELS
READ_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "BMP")
WRITE_FORMATS = ("PNG", "TIFF", "JPEG", "WEBP")
SUFFIXES = {
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".dib": "BMP",
}
_FORMAT_SUFFIX = {"PNG": ".png", "TIFF": ".tif", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp"}
_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_EXIF_HEADER = b"Exif\x00\x00"
_METADATA_LIMIT = 64 << 20  # inflated size cap for compressed PNG metadata chunks

# EXIF / TIFF tag numbers
_ORIENTATION = 0x0112
_XRES, _YRES, _RESUNIT = 0x011A, 0x011B, 0x0128
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x8769, 0x8825, 0xA005
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003
# IFD0 tags carried between EXIF and a TIFF's own first IFD (the rest of IFD0 describes the pixels).
_TIFF_TEXT_TAGS = (270, 271, 272, 305, 306, 315, 316, 33432)  # Description, Make, Model, Software, DateTime, ...
_TIFF_EXIF_TAGS = (*_TIFF_TEXT_TAGS, _ORIENTATION, _XRES, _YRES, _RESUNIT)


@dataclass(repr=False)
class ImageData:
    """Pixels plus everything else a file carried. See the module docstring for the per-mode table."""

    color: np.ndarray
    alpha: np.ndarray | None = None
    icc: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    iptc: bytes | None = None
    dpi: tuple[float, float] | None = None
    source_format: str = ""
    source_mode: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.color.shape[0])

    @property
    def width(self) -> int:
        return int(self.color.shape[1])

    @property
    def is_gray(self) -> bool:
        return self.color.shape[2] == 1

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None

    @property
    def dtype(self) -> np.dtype:
        return self.color.dtype

    @classmethod
    def from_arrays(cls, color: np.ndarray, alpha: np.ndarray | None = None, **meta: Any) -> ImageData:
        """Bare pixels, no metadata: ``color`` (H,W), (H,W,1) or (H,W,3); ``alpha`` (H,W) or None."""
        if color.ndim == 3 and color.shape[2] in (2, 4):
            raise ValueError("pass alpha separately (or use from_array, which splits a 2nd/4th channel off)")
        return from_array(color, alpha, **meta)

    def with_pixels(self, color: np.ndarray, alpha: np.ndarray | None = None) -> ImageData:
        """A copy with new pixels (e.g. the upscaled result) and the same metadata."""
        return dataclasses.replace(self, color=color, alpha=alpha, notes=list(self.notes))

    def __repr__(self) -> str:
        meta = [k for k in ("icc", "exif", "xmp", "iptc") if getattr(self, k)]
        return (
            f"ImageData({self.width}x{self.height}x{self.color.shape[2]} {self.dtype}, alpha={self.has_alpha}, "
            f"{self.source_format} {self.source_mode}, dpi={self.dpi}, meta={meta}, notes={self.notes})"
        )


# ----------------------------------------------------------------------------------------------- helpers (public)


def default_output_format(input_format: str) -> str:
    """Lossless by default: TIFF stays TIFF, everything else becomes PNG."""
    return "TIFF" if input_format.upper() in ("TIFF", "TIF") else "PNG"


def format_for_path(path: str | os.PathLike[str]) -> str | None:
    """The format a file name implies (``.png`` -> ``"PNG"``, ``.tif`` -> ``"TIFF"``), or None."""
    return SUFFIXES.get(Path(path).suffix.lower())


def suffix_for(fmt: str) -> str:
    """The usual file suffix for a format name: ``"TIFF"`` -> ``".tif"``."""
    key = {"JPG": "JPEG", "TIF": "TIFF"}.get(fmt.upper(), fmt.upper())
    if key not in _FORMAT_SUFFIX:
        raise ValueError(f"unknown image format {fmt!r}; known: {', '.join(_FORMAT_SUFFIX)}")
    return _FORMAT_SUFFIX[key]


def from_pil(im: Image.Image) -> ImageData:
    """A Pillow image (any mode read_image handles) with its info (icc_profile, exif, xmp, dpi) as ImageData.

    Unlike :func:`read_image`, the EXIF orientation is *not* applied: pixels and tag stay as they are, so
    ``to_pil(from_pil(im))`` has ``im``'s geometry.
    """
    im.load()
    notes: list[str] = []
    info = im.info
    xmp = info.get("xmp") or None
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    photoshop = info.get("photoshop")
    iptc = photoshop.get(0x0404) if isinstance(photoshop, dict) else None
    exif = info.get("exif")
    if isinstance(exif, Image.Exif):
        exif = exif.tobytes()
    color, alpha, icc = _from_pil(im, info.get("icc_profile") or None, notes)
    return ImageData(
        color,
        alpha,
        icc,
        _strip_exif_header(exif),
        xmp,
        iptc or None,
        _clean_dpi(info.get("dpi")),
        (im.format or "").upper(),
        im.mode,
        notes,
    )


def to_pil(data: ImageData) -> Image.Image:
    """ImageData as a Pillow image, metadata in ``im.info``.

    Pillow has no 16-bit or float RGB(A) and no 16-bit LA: those come back as 8-bit. Gray without alpha keeps its
    depth (``I;16`` for uint16, ``F`` for float32).
    """
    _validate(data)
    color, alpha = data.color, data.alpha
    if data.is_gray and alpha is None and color.dtype != np.uint8:
        im = Image.fromarray(np.ascontiguousarray(color[:, :, 0]))
    else:
        c8 = _to_uint8(color)
        if alpha is not None:
            c8 = np.concatenate([c8, _to_uint8(alpha)[:, :, None]], axis=2)
        im = Image.fromarray(np.ascontiguousarray(c8[:, :, 0] if c8.shape[2] == 1 else c8))
    if data.icc:
        im.info["icc_profile"] = data.icc
    if data.exif:
        im.info["exif"] = _EXIF_HEADER + data.exif
    if data.xmp:
        im.info["xmp"] = data.xmp
    if data.dpi:
        im.info["dpi"] = data.dpi
    return im


def from_array(
    pixels: np.ndarray, alpha: np.ndarray | None = None, *, like: ImageData | None = None, **meta: Any
) -> ImageData:
    """Wrap an (H,W), (H,W,1..4) array; a 2nd/4th channel becomes alpha. ``like`` copies metadata from a read image."""
    a = np.asarray(pixels)
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    if a.dtype not in _DTYPES:
        raise ValueError(f"pixels must be uint8, uint16 or float32, not {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"pixels must be (H, W) or (H, W, 1|2|3|4), not {a.shape}")
    if a.shape[2] in (2, 4):
        if alpha is not None:
            raise ValueError("alpha given twice: as a channel and as an argument")
        a, alpha = a[:, :, :-1], a[:, :, -1]
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.ndim == 3 and alpha.shape[2] == 1:
            alpha = alpha[:, :, 0]
        alpha = alpha.astype(a.dtype, copy=False)
    base: dict[str, Any] = {}
    if like is not None:
        base = {k: getattr(like, k) for k in ("icc", "exif", "xmp", "iptc", "dpi", "source_format", "source_mode")}
    base.update(meta)
    data = ImageData(color=np.ascontiguousarray(a), alpha=alpha, **base)
    _validate(data)
    return data


def to_array(data: ImageData) -> np.ndarray:
    """Color and alpha stacked: (H,W,1|2|3|4)."""
    if data.alpha is None:
        return data.color
    return np.concatenate([data.color, data.alpha[:, :, None]], axis=2)


def to_float32(a: np.ndarray) -> np.ndarray:
    """uint8/uint16 -> float32 in 0..1; float32 unchanged."""
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    return a.astype(np.float32, copy=False)


def from_float32(a: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """float 0..1 -> uint8/uint16 (clipped, rounded) or float32."""
    dt = np.dtype(dtype)
    if dt == np.float32:
        return a.astype(np.float32, copy=False)
    top = float(np.iinfo(dt).max)
    return (np.clip(a, 0.0, 1.0) * top + 0.5).astype(dt)


# ---------------------------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageData:
    """Read a JPEG, PNG, TIFF, WebP or BMP file. See the module docstring for what each mode becomes."""
    path = Path(path)
    limit = _resolve_max_pixels(max_pixels)
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise ImageReadError(f"{path}: is a directory, not an image file")
        if not stat.S_ISREG(st.st_mode):
            # a FIFO or a device would block or never end
            raise ImageReadError(f"{path}: is not a regular file (a pipe, socket or device); refused")
        size = st.st_size
        with path.open("rb") as f:
            head = f.read(32)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot open ({e.strerror or e})") from e
    except ValueError as e:  # an embedded NUL byte
        raise ImageReadError(f"{path!r}: not a usable path ({e})") from None
    if size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")
    fmt = _sniff(head)
    if fmt is None:
        raise ImageReadError(
            f"{path}: not a supported image ({_describe(head)}); pixelift reads {', '.join(READ_FORMATS)}"
        )
    try:
        if fmt == "PNG":
            data = _read_png(path, limit)
        elif fmt == "TIFF":
            data = _read_tiff(path, limit)
        else:
            data = _read_pillow(path, fmt, limit)
    except PixeliftError as e:
        if str(path) in str(e):
            raise
        raise type(e)(f"{path}: {e}") from e
    except MemoryError as e:
        raise ImageReadError(f"{path}: not enough memory to decode this {fmt} image") from e
    except Exception as e:  # decoders raise anything from OSError to struct.error on bad data
        raise ImageReadError(f"{path}: corrupt or truncated {fmt} file ({type(e).__name__}: {e})") from e
    _apply_orientation(data)
    return data


def _resolve_max_pixels(max_pixels: int | None) -> int | None:
    return limits.resolve_limit(max_pixels, DEFAULT_MAX_PIXELS, ENV_MAX_PIXELS, "max_pixels")


def _check_size(path: Path, width: int, height: int, limit: int | None) -> None:
    if width <= 0 or height <= 0:
        raise ImageReadError(f"{path}: the image has no pixels ({width}x{height})")
    if limit is not None and width * height > limit:
        raise ImageTooLargeError(
            f"{path}: {width}x{height} = {width * height:,} pixels is over the limit of {limit:,} "
            "(a guard against decompression bombs). If you trust this file, pass max_pixels=None or a larger "
            f"number, or set {ENV_MAX_PIXELS}=0 (no limit) or a larger number"
        )


def _sniff(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM":
        return "BMP"
    return None


def _describe(head: bytes) -> str:
    known = {b"GIF8": "GIF", b"%PDF": "PDF", b"8BPS": "PSD", b"\x00\x00\x00\x0cjP": "JPEG 2000"}
    for magic, name in known.items():
        if head.startswith(magic):
            return f"looks like {name}"
    if head[4:8] == b"ftyp":
        return "looks like HEIF/AVIF/MP4"
    try:
        head.decode("utf-8")
        return "looks like a text file"
    except UnicodeDecodeError:
        return "unrecognised signature"


_PIL_OPEN_LOCK = threading.Lock()


def _pil_open(fp: Any, fmt: str) -> Image.Image:
    """Image.open without Pillow's own bomb check: ours (``max_pixels``) runs on the size it reports."""
    with _PIL_OPEN_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(fp, formats=[fmt])
        finally:
            Image.MAX_IMAGE_PIXELS = saved


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


def _from_pil(
    im: Image.Image, icc: bytes | None, notes: list[str]
) -> tuple[np.ndarray, np.ndarray | None, bytes | None]:
    """Pillow image -> (color (H,W,C), straight alpha or None, icc)."""
    mode = im.mode
    alpha = None
    if mode == "1":
        im = im.convert("L")
        notes.append("1-bit image converted to 8-bit grayscale (0/255)")
    elif mode in ("P", "PA"):
        transparent = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if transparent else "RGB")
        notes.append(f"palette image expanded to {'RGBA' if transparent else 'RGB'} 8-bit")
    elif mode in ("RGBa", "La"):
        im = im.convert("RGBA" if mode == "RGBa" else "LA")
        notes.append("premultiplied alpha un-premultiplied")
    elif mode in ("RGBX", "YCbCr"):
        im = im.convert("RGB")
    elif mode == "CMYK":
        im, icc = _cmyk_to_rgb(im, icc, notes)
    elif mode == "I":
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            notes.append("32-bit integer gray clipped to 16 bits")
        return np.clip(arr, 0, 65535).astype(np.uint16)[:, :, None], None, icc
    elif mode not in ("L", "LA", "RGB", "RGBA", "F") and not mode.startswith("I;16"):
        raise ImageReadError(f"unsupported pixel mode {mode!r}")

    arr = np.asarray(im)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype not in _DTYPES:
        arr = arr.astype(np.uint16 if arr.dtype.kind in "ui" else np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] in (2, 4):
        arr, alpha = arr[:, :, :-1], arr[:, :, -1]
    transparency = im.info.get("transparency") if im.mode in ("L", "RGB") else None
    if transparency is not None and not isinstance(transparency, bytes):
        key = np.array(transparency if isinstance(transparency, tuple) else (transparency,), dtype=np.int64)
        if key.size == arr.shape[2]:
            alpha = np.where(np.all(arr == key, axis=2), 0, np.iinfo(arr.dtype).max).astype(arr.dtype)
            notes.append("transparent colour key (tRNS) turned into an alpha channel")
    return np.ascontiguousarray(arr), None if alpha is None else np.ascontiguousarray(alpha), icc


@functools.cache
def srgb_profile_bytes() -> bytes:
    """``ImageCms.createProfile("sRGB")`` as ICC bytes, made reproducible.

    lcms stamps the save time into the header (and, for v4, into the MD5 profile ID), so two calls a second apart
    differ; pin the date to 2000-01-01 and recompute the ID the way ICC.1 defines it.
    """
    raw = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    raw[24:36] = struct.pack(">6H", 2000, 1, 1, 0, 0, 0)
    if any(raw[84:100]):
        probe = bytearray(raw)
        probe[44:48] = probe[64:68] = bytes(4)
        probe[84:100] = bytes(16)
        raw[84:100] = hashlib.md5(bytes(probe), usedforsecurity=False).digest()
    return bytes(raw)


def _icc_space(icc: bytes | None) -> bytes | None:
    return icc[16:20] if icc and len(icc) >= 128 else None


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[Image.Image, bytes | None]:
    if icc and _icc_space(icc) == b"CMYK":
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            transform = ImageCms.buildTransform(src, srgb, "CMYK", "RGB", renderingIntent=ImageCms.Intent.PERCEPTUAL)
            rgb = ImageCms.applyTransform(im, transform)
            assert rgb is not None
            notes.append(
                "CMYK converted to RGB with the embedded ICC profile (perceptual intent); "
                "the output ICC profile is sRGB (ImageCms.createProfile('sRGB'))"
            )
            return rgb, srgb_profile_bytes()
        except (ImageCms.PyCMSError, OSError, ValueError) as e:
            notes.append(f"the embedded CMYK ICC profile could not be used ({e})")
    notes.append(
        "CMYK converted to RGB naively (R = 255 - C - K style, no usable CMYK ICC profile): colours are approximate "
        "and no ICC profile is attached (sRGB assumed)"
    )
    return im.convert("RGB"), None


# --- PNG


def _png_chunks(buf: bytes, path: Path, notes: list[str]) -> list[tuple[bytes, bytes]]:
    chunks: list[tuple[bytes, bytes]] = []
    pos = 8
    while True:
        if pos + 12 > len(buf):
            raise ImageReadError(f"{path}: truncated PNG (the file ends before the IEND chunk)")
        (n,) = struct.unpack_from(">I", buf, pos)
        ctype = buf[pos + 4 : pos + 8]
        end = pos + 12 + n
        if end > len(buf):
            raise ImageReadError(
                f"{path}: truncated PNG (chunk {ctype.decode('latin-1')} runs past the end of the file)"
            )
        body = buf[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack_from(">I", buf, pos + 8 + n)
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            if not ctype[:1].isupper():
                notes.append(f"skipped PNG chunk {ctype.decode('latin-1')} with a bad checksum")
                pos = end
                continue
            raise ImageReadError(f"{path}: corrupt PNG (bad checksum in chunk {ctype.decode('latin-1')})")
        chunks.append((ctype, body))
        pos = end
        if ctype == b"IEND":
            return chunks


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, _METADATA_LIMIT)
    if d.unconsumed_tail:
        raise ValueError("compressed metadata chunk inflates past 64 MiB")
    return out


def _parse_raw_profile(text: bytes) -> bytes:
    """ImageMagick's ``Raw profile type NAME`` text: '\\nNAME\\n   LENGTH\\nHEX...'."""
    parts = text.strip().split(b"\n")
    length = int(parts[1])
    return bytes.fromhex(b"".join(p.strip() for p in parts[2:]).decode("ascii"))[:length]


def _raw_profile(name: str, data: bytes) -> bytes:
    hx = data.hex()
    lines = "\n".join(hx[i : i + 72] for i in range(0, len(hx), 72))
    return f"\n{name}\n{len(data):8d}\n{lines}\n".encode("ascii")


def _read_png(path: Path, limit: int | None) -> ImageData:
    notes: list[str] = []
    buf = path.read_bytes()
    chunks = _png_chunks(buf, path, notes)
    if chunks[0][0] != b"IHDR" or len(chunks[0][1]) < 13:
        raise ImageReadError(f"{path}: corrupt PNG (no IHDR chunk)")
    width, height, depth, ctype = struct.unpack_from(">IIBB", chunks[0][1])
    _check_size(path, width, height, limit)
    icc = exif = xmp = iptc = None
    dpi = None
    for name, body in chunks[1:]:
        try:
            if name == b"iCCP":
                icc = _inflate(body.split(b"\x00", 1)[1][1:])
            elif name == b"eXIf":
                exif = _strip_exif_header(body)
            elif name == b"pHYs" and len(body) >= 9:
                x, y, unit = struct.unpack_from(">IIB", body)
                if unit == 1 and x and y:
                    dpi = (round(x * 0.0254, 2), round(y * 0.0254, 2))  # 11811 px/m -> 300.0, not 299.9994
            elif name == b"iTXt":
                key, rest = body.split(b"\x00", 1)
                compressed = rest[0] == 1
                _lang, _translated, text = rest[2:].split(b"\x00", 2)
                if key == b"XML:com.adobe.xmp":
                    xmp = _inflate(text) if compressed else text
            elif name in (b"tEXt", b"zTXt"):
                key, text = body.split(b"\x00", 1)
                if key.startswith(b"Raw profile type "):
                    if name == b"zTXt":
                        text = _inflate(text[1:])
                    kind = key[len(b"Raw profile type ") :].lower()
                    if kind == b"iptc":
                        iptc = _parse_raw_profile(text)
                    elif kind in (b"exif", b"app1") and exif is None:
                        exif = _strip_exif_header(_parse_raw_profile(text))
                    elif kind == b"xmp" and xmp is None:
                        xmp = _parse_raw_profile(text)
        except (ValueError, IndexError, zlib.error) as e:
            notes.append(f"ignored an unreadable PNG {name.decode('latin-1')} chunk ({e})")
    if depth == 16:
        import imagecodecs

        arr = imagecodecs.png_decode(buf)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        arr = arr.astype(np.uint16, copy=False)
        color, alpha = (arr[:, :, :-1], arr[:, :, -1]) if arr.shape[2] in (2, 4) else (arr, None)
        trns = next((b for n, b in chunks if n == b"tRNS"), None)
        if alpha is None and trns is not None and len(trns) == 2 * color.shape[2]:
            colour_key = np.array(struct.unpack(f">{color.shape[2]}H", trns), dtype=np.uint16)
            alpha = np.where(np.all(color == colour_key, axis=2), 0, 65535).astype(np.uint16)
        if trns is not None:
            notes.append("transparent colour key (tRNS) turned into an alpha channel")
        gray = color.shape[2] == 1
        mode = ("I;16" if alpha is None else "LA;16") if gray else ("RGB;16" if alpha is None else "RGBA;16")
        return ImageData(
            np.ascontiguousarray(color),
            None if alpha is None else np.ascontiguousarray(alpha),
            icc,
            exif,
            xmp,
            iptc,
            dpi,
            "PNG",
            "I;16" if gray and ctype == 0 else mode,
            notes,
        )
    if any(n == b"acTL" for n, _ in chunks):
        notes.append("animated PNG: only the default image was read")
    # Pillow decodes the pixels from the critical chunks only: the metadata is already parsed above, and Pillow's
    # own 1 MB text-chunk limit would otherwise reject a valid PNG with a large XMP packet.
    pixels_only = b"\x89PNG\r\n\x1a\n" + b"".join(
        _png_chunk(n, b) for n, b in chunks if n in (b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND")
    )
    with _pil_open(io.BytesIO(pixels_only), "PNG") as im:
        im.load()
        mode = im.mode
        color, alpha, icc = _from_pil(im, icc, notes)
    return ImageData(color, alpha, icc, exif, xmp, iptc, dpi, "PNG", mode, notes)


# --- TIFF


def _read_tiff(path: Path, limit: int | None) -> ImageData:
    import tifffile

    notes: list[str] = []
    with tifffile.TiffFile(path) as tif:
        if not len(tif.pages):
            raise ImageReadError(f"{path}: the TIFF holds no image")
        page = cast("tifffile.TiffPage", tif.pages[0])  # the first page is always a TiffPage
        if len(tif.pages) > 1:
            notes.append(f"only the first of {len(tif.pages)} TIFF pages was read")
        _check_size(path, int(page.imagewidth), int(page.imagelength), limit)
        if page.imagedepth > 1:
            raise ImageReadError(f"{path}: volumetric TIFF (depth {page.imagedepth}) is not supported")
        photometric = int(page.photometric)
        bps = page.bitspersample
        extrasamples = tuple(int(e) for e in page.extrasamples)
        colormap = page.colormap
        compression = int(page.compression)
        tags = page.tags
        icc = _tag_bytes(tags.get(34675), tif.byteorder)
        xmp = _tag_bytes(tags.get(700), tif.byteorder)
        iptc = _iptc_trim(_tag_bytes(tags.get(33723), tif.byteorder))
        dpi = _tiff_dpi(tags)
        exif = _tiff_exif(path, tif.byteorder, tif.is_bigtiff, page.offset, notes)
        arr = page.asarray()
        axes = page.axes
    # bring to (H, W, S)
    if "S" in axes:
        arr = np.moveaxis(arr, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    else:
        arr = arr[..., None]
        axes += "S"
    if axes != "YXS":
        raise ImageReadError(f"{path}: unsupported TIFF layout {axes!r}")

    n_color = {0: 1, 1: 1, 2: 3, 3: 1, 5: 4, 6: 3}.get(photometric)
    if n_color is None or (photometric == 6 and compression != 7):
        raise ImageReadError(f"{path}: unsupported TIFF photometric interpretation {photometric}")
    if photometric == 5 and arr.shape[2] < 4:
        raise ImageReadError(f"{path}: CMYK TIFF with {arr.shape[2]} inks is not supported")
    if arr.shape[2] < n_color:
        raise ImageReadError(f"{path}: TIFF has {arr.shape[2]} samples per pixel, expected {n_color}")
    color, extra = arr[:, :, :n_color], arr[:, :, n_color:]

    alpha = None
    associated = False
    if extra.shape[2]:
        kind = extrasamples[0] if extrasamples else 0
        alpha = extra[:, :, 0]
        associated = kind == 1
        if kind == 0:
            notes.append("unspecified TIFF extra sample treated as alpha")
        if extra.shape[2] > 1:
            notes.append(f"{extra.shape[2] - 1} extra TIFF sample channel(s) dropped")

    def scale(a: np.ndarray) -> np.ndarray:
        if a.dtype == np.bool_:
            return a.astype(np.uint8) * np.uint8(255)
        if a.dtype == np.uint8 and bps < 8:
            return (a.astype(np.uint16) * 255 // (2**bps - 1)).astype(np.uint8)
        if a.dtype == np.uint16 and 8 < bps < 16:
            return (a.astype(np.uint32) * 65535 // (2**bps - 1)).astype(np.uint16)
        if a.dtype in (np.float16, np.float64):
            return a.astype(np.float32)
        if a.dtype not in _DTYPES:
            raise ImageReadError(f"{path}: TIFF sample type {a.dtype} is not supported (uint8, uint16, float32)")
        return a

    kind_name = "gray"
    if photometric == 3:
        if colormap is None:
            raise ImageReadError(f"{path}: palette TIFF without a colormap")
        cmap = np.round(np.asarray(colormap, dtype=np.float64) / 257.0).astype(np.uint8).T
        color = cmap[np.clip(color[:, :, 0], 0, len(cmap) - 1)]
        notes.append("palette image expanded to RGB 8-bit")
        kind_name = "palette"
        if alpha is not None:
            alpha = scale(alpha)
            if alpha.dtype != np.uint8:
                alpha = _to_uint8(alpha)
    else:
        if arr.dtype == np.bool_:
            notes.append("1-bit image converted to 8-bit grayscale (0/255)")
        elif arr.dtype == np.uint8 and bps < 8:
            notes.append(f"{bps}-bit samples scaled to 8 bits")
        elif arr.dtype == np.uint16 and 8 < bps < 16:
            notes.append(f"{bps}-bit samples scaled to 16 bits")
        elif arr.dtype in (np.float16, np.float64):
            notes.append(f"{arr.dtype} samples converted to float32")
        color = scale(color)
        alpha = None if alpha is None else scale(alpha)
        if photometric == 0:
            color = ~color if color.dtype != np.float32 else (1.0 - color).astype(np.float32)
            notes.append("min-is-white gray inverted to min-is-black")
    if associated and alpha is not None:
        color = _unpremultiply(color, alpha)
        notes.append("premultiplied (associated) alpha un-premultiplied")

    if photometric == 5:
        kind_name = "cmyk"
        if color.dtype != np.uint8:
            color = _to_uint8(color)
            alpha = None if alpha is None else _to_uint8(alpha)
            notes.append(f"{arr.dtype} CMYK reduced to 8-bit CMYK before conversion")
        h, w = color.shape[:2]
        im = Image.frombytes("CMYK", (w, h), np.ascontiguousarray(color).tobytes())
        rgb, icc = _cmyk_to_rgb(im, icc, notes)
        color = np.asarray(rgb)
    elif photometric in (2, 6):
        kind_name = "rgb"

    mode = _mode_name(kind_name, color.dtype, alpha is not None, arr.dtype == np.bool_)
    return ImageData(
        np.ascontiguousarray(color),
        None if alpha is None else np.ascontiguousarray(alpha),
        icc,
        exif,
        xmp,
        iptc,
        dpi,
        "TIFF",
        mode,
        notes,
    )


def _mode_name(kind: str, dtype: np.dtype, has_alpha: bool, bilevel: bool) -> str:
    if bilevel:
        return "1"
    if kind == "cmyk":
        return "CMYKA" if has_alpha else "CMYK"
    if kind == "palette":
        return "PA" if has_alpha else "P"
    base = ("LA" if has_alpha else "L") if kind == "gray" else ("RGBA" if has_alpha else "RGB")
    if dtype == np.uint8:
        return base
    if base == "L":
        return "I;16" if dtype == np.uint16 else "F"
    return base + (";16" if dtype == np.uint16 else ";32F")


def _tag_bytes(tag: Any, byteorder: str) -> bytes | None:
    if tag is None:
        return None
    value = tag.value
    if isinstance(value, bytes):
        return value or None
    if isinstance(value, str):
        return value.encode("utf-8") or None
    arr = np.asarray(value)
    if arr.dtype.kind in "ui" and tag.dtype in (3, 4, 8, 9):
        arr = arr.astype(byteorder + {3: "u2", 4: "u4", 8: "i2", 9: "i4"}[int(tag.dtype)])
    return arr.tobytes() or None


def _iptc_trim(iptc: bytes | None) -> bytes | None:
    """Drop the zero padding a LONG-typed TIFF IPTC tag adds after the last IIM dataset."""
    if not iptc:
        return None
    pos = 0
    while pos + 5 <= len(iptc) and iptc[pos] == 0x1C:
        (size,) = struct.unpack_from(">H", iptc, pos + 3)
        if size & 0x8000:  # extended dataset: the length is in the next (size & 0x7FFF) bytes
            n = size & 0x7FFF
            size = int.from_bytes(iptc[pos + 5 : pos + 5 + n], "big") + n
        pos += 5 + size
    if 0 < pos <= len(iptc) and not iptc[pos:].strip(b"\x00"):
        return iptc[:pos]
    return iptc


def _tiff_dpi(tags: Any) -> tuple[float, float] | None:
    try:
        unit = int(tags[296].value) if 296 in tags else 2
        xs, ys = tags[282].value, tags[283].value
        x, y = xs[0] / xs[1], ys[0] / ys[1]
    except (KeyError, ZeroDivisionError, TypeError, IndexError):
        return None
    if unit == 3:
        x, y = x * 2.54, y * 2.54
    elif unit != 2:
        return None
    return _clean_dpi((x, y))


def _tiff_exif(path: Path, byteorder: str, bigtiff: bool, offset: int, notes: list[str]) -> bytes | None:
    """EXIF bytes from a TIFF's first IFD: its descriptive tags plus the Exif and GPS sub-IFDs."""
    try:
        with path.open("rb") as fp, warnings.catch_warnings():
            # Pillow warns about count mismatches it tolerates (e.g. IPTC stored as LONGs, as Photoshop does)
            warnings.simplefilter("ignore")
            src = Image.Exif()
            src.endian = byteorder
            src.bigtiff = bigtiff
            src.load_from_fp(fp, offset)
            out = Image.Exif()
            out.endian = "<" if byteorder == "<" else ">"
            for tag in _TIFF_EXIF_TAGS:
                if tag in src:
                    value = src[tag]
                    if tag == 270 and isinstance(value, str) and _is_machine_description(value):
                        continue
                    out[tag] = value
            for ifd_tag in (_EXIF_IFD, _GPS_IFD):
                if ifd_tag in src:
                    sub = dict(src.get_ifd(ifd_tag))
                    if ifd_tag == _EXIF_IFD and _INTEROP_IFD in sub:
                        interop = src.get_ifd(_INTEROP_IFD)
                        if interop:
                            sub[_INTEROP_IFD] = dict(interop)
                        else:
                            del sub[_INTEROP_IFD]
                    if sub:
                        out[ifd_tag] = sub
            if not set(out) - {_ORIENTATION, _XRES, _YRES, _RESUNIT} and out.get(_ORIENTATION, 1) == 1:
                return None  # nothing beyond what the TIFF's own tags (and ImageData.dpi) already say
            return _strip_exif_header(out.tobytes())
    except Exception as e:
        notes.append(f"EXIF tags in the TIFF could not be read and were dropped ({type(e).__name__}: {e})")
        return None


def _is_machine_description(text: str) -> bool:
    """tifffile/ImageJ write shape metadata into ImageDescription; it must not follow the pixels."""
    t = text.lstrip()
    return (t.startswith("{") and '"shape"' in t) or t.startswith("ImageJ=")


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return from_float32(a, np.uint8)


def _to_uint16(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint16:
        return a
    if a.dtype == np.uint8:
        return a.astype(np.uint16) * np.uint16(257)
    return from_float32(a, np.uint16)


def _unpremultiply(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    c = color.astype(np.float64)
    a = alpha.astype(np.float64)[:, :, None]
    if color.dtype == np.float32:
        return np.where(a > 0, c / np.where(a > 0, a, 1), 0).astype(np.float32)
    top = float(np.iinfo(color.dtype).max)
    out = np.where(a > 0, c * top / np.where(a > 0, a, 1), 0)
    return np.clip(np.round(out), 0, top).astype(color.dtype)


# --- orientation


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
    data.exif = _patch_exif(data.exif, orientation=1)
    if data.xmp:
        for rx in _XMP_ORIENTATION:
            data.xmp = rx.sub(rb"\g<1>1\g<3>", data.xmp)
    data.notes.append(f"EXIF orientation {o} applied to the pixels ({_ORIENTATION_TEXT[o]}); the tag is now 1")


def _patch_exif(
    exif: bytes,
    *,
    orientation: int | None = None,
    scale: float = 1.0,
    size: tuple[int, int] | None = None,
) -> bytes:
    """Patch raw EXIF in place (nothing moves, so maker notes keep their offsets). Unparseable EXIF is returned as is."""
    buf = bytearray(exif)
    try:
        endian, entries = _exif_ifd0(exif)
        if orientation is not None and _ORIENTATION in entries:
            p, typ, _, vpos = entries[_ORIENTATION]
            struct.pack_into(endian + ("H" if typ == 3 else "I"), buf, vpos, orientation)
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


# ---------------------------------------------------------------------------------------------------------- writing


def write_image(
    data: ImageData,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    quality: int = 95,
    overwrite: bool = False,
    scale_dpi: float = 1.0,
    flatten_alpha: bool = False,
    lossless: bool = False,
    compression: str | None = "zlib",
) -> Path:
    """Write ``data`` atomically; returns the path.

    ``format``: PNG, TIFF, JPEG or WEBP; by default from the suffix, else :func:`default_output_format`.
    ``quality``: JPEG/WebP quality (1..100). ``lossless``: WebP lossless. ``compression``: TIFF compression
    (tifffile name, ``None`` for none). ``scale_dpi``: multiply dpi and EXIF X/YResolution (e.g. by the upscale
    factor to keep the print size). ``flatten_alpha``: composite alpha on white for JPEG instead of raising.
    """
    path = Path(path)
    fmt = (format or format_for_path(path) or default_output_format(data.source_format)).upper()
    fmt = {"JPG": "JPEG", "TIF": "TIFF"}.get(fmt, fmt)
    if fmt not in WRITE_FORMATS:
        raise ImageWriteError(f"{path}: cannot write {fmt}; pixelift writes {', '.join(WRITE_FORMATS)}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1..100, not {quality}")
    if not (scale_dpi > 0 and math.isfinite(scale_dpi)):
        raise ValueError(f"scale_dpi must be a positive number, not {scale_dpi}")
    if lossless and fmt == "JPEG":
        raise ImageWriteError(f"{path}: JPEG cannot be lossless; write PNG, TIFF or WebP")
    _validate(data)
    if path.is_dir():
        raise ImageWriteError(f"{path}: is a directory")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists; pass overwrite=True to replace it")

    color, alpha, icc = data.color, data.alpha, data.icc
    if fmt in ("JPEG", "WEBP"):
        color = _to_uint8(color)
        alpha = None if alpha is None else _to_uint8(alpha)
    elif fmt == "PNG" and color.dtype == np.float32:
        color = _to_uint16(color)
        alpha = None if alpha is None else _to_uint16(alpha)
    if fmt == "JPEG" and alpha is not None:
        if not flatten_alpha:
            raise AlphaNotSupportedError(
                f"{path}: JPEG cannot hold an alpha channel; write PNG, TIFF or WebP, or pass flatten_alpha=True "
                "to composite the image on white"
            )
        color, alpha = _flatten_on_white(color, alpha), None
    if fmt == "WEBP" and color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
        if _icc_space(icc) == b"GRAY":
            icc = None  # a gray profile does not describe RGB pixels
    dpi = None if data.dpi is None else (data.dpi[0] * scale_dpi, data.dpi[1] * scale_dpi)
    exif = _strip_exif_header(data.exif)
    if exif:
        exif = _patch_exif(exif, scale=scale_dpi, size=(color.shape[1], color.shape[0]))

    try:
        with atomic_path(path) as tmp:
            if fmt == "PNG":
                _write_png(tmp, color, alpha, icc, exif, data.xmp, data.iptc, dpi)
            elif fmt == "TIFF":
                _write_tiff(tmp, color, alpha, icc, exif, data.xmp, data.iptc, dpi, compression)
            elif fmt == "JPEG":
                _write_jpeg(tmp, color, icc, exif, data.xmp, data.iptc, dpi, quality)
            else:
                _write_webp(tmp, color, alpha, icc, exif, data.xmp, quality, lossless)
    except PixeliftError:
        raise
    except Exception as e:
        raise ImageWriteError(f"{path}: cannot write {fmt} ({type(e).__name__}: {e})") from e
    return path


def _validate(data: ImageData) -> None:
    c = data.color
    if not isinstance(c, np.ndarray) or c.ndim != 3 or c.shape[2] not in (1, 3):
        raise ValueError(f"ImageData.color must be an (H, W, 3) or (H, W, 1) array, not {getattr(c, 'shape', c)}")
    if c.dtype not in _DTYPES:
        raise ValueError(f"ImageData.color must be uint8, uint16 or float32, not {c.dtype}")
    if c.shape[0] == 0 or c.shape[1] == 0:
        raise ValueError("ImageData.color has no pixels")
    a = data.alpha
    if a is not None and (a.shape != c.shape[:2] or a.dtype != c.dtype):
        raise ValueError(f"ImageData.alpha must be {c.shape[:2]} {c.dtype}, not {a.shape} {a.dtype}")


def _flatten_on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    top = 255.0
    a = alpha.astype(np.float32)[:, :, None] / top
    out = color.astype(np.float32) * a + top * (1.0 - a)
    return np.clip(np.round(out), 0, top).astype(np.uint8)


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def _write_png(
    tmp: Path,
    color: np.ndarray,
    alpha: np.ndarray | None,
    icc: bytes | None,
    exif: bytes | None,
    xmp: bytes | None,
    iptc: bytes | None,
    dpi: tuple[float, float] | None,
) -> None:
    import imagecodecs

    arr = color if alpha is None else np.concatenate([color, alpha[:, :, None]], axis=2)
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    png = imagecodecs.png_encode(np.ascontiguousarray(arr))
    if png[12:16] != b"IHDR":
        raise ImageWriteError("PNG encoder output does not start with IHDR")
    ihdr_end = 8 + 12 + struct.unpack_from(">I", png, 8)[0]
    extra = []
    if icc:
        extra.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if dpi:
        x, y = (min(2**32 - 1, max(1, round(v / 0.0254))) for v in dpi)
        extra.append(_png_chunk(b"pHYs", struct.pack(">IIB", x, y, 1)))
    if exif:
        extra.append(_png_chunk(b"eXIf", exif))
    if xmp:
        extra.append(_png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp))
    if iptc:
        extra.append(_png_chunk(b"zTXt", b"Raw profile type iptc\x00\x00" + zlib.compress(_raw_profile("iptc", iptc))))
    tmp.write_bytes(png[:ihdr_end] + b"".join(extra) + png[ihdr_end:])


def _write_tiff(
    tmp: Path,
    color: np.ndarray,
    alpha: np.ndarray | None,
    icc: bytes | None,
    exif: bytes | None,
    xmp: bytes | None,
    iptc: bytes | None,
    dpi: tuple[float, float] | None,
    compression: str | None,
) -> None:
    import tifffile

    arr = color if alpha is None else np.concatenate([color, alpha[:, :, None]], axis=2)
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    gray = color.shape[2] == 1
    extratags: list[tuple[Any, ...]] = [(_ORIENTATION, "H", 1, 1, True)]
    sub_ifds: dict[int, tuple[int, dict[int, Any]]] = {}
    src = Image.Exif()
    if exif:
        try:
            src.load(exif)
        except Exception as e:
            warnings.warn(f"EXIF could not be parsed and is not written to the TIFF ({e})", stacklevel=3)
            src = Image.Exif()
    if len(src):
        for tag in _TIFF_TEXT_TAGS:
            value = src.get(tag)
            if isinstance(value, bytes):
                value = value.rstrip(b"\x00").decode("latin-1")
            if isinstance(value, str) and value.strip("\x00"):
                if tag == 270 and _is_machine_description(value):
                    continue
                extratags.append((tag, "s", 0, value.rstrip("\x00").encode("utf-8", "replace"), True))
        # tifffile refuses to write tags 34665/34853 itself: write a LONG placeholder one below the real code
        # (so the IFD stays sorted), then append the sub-IFD and patch the entry, see _append_sub_ifds.
        for real, placeholder in ((_EXIF_IFD, 34664), (_GPS_IFD, 34852)):
            if real in src:
                sub = dict(src.get_ifd(real))
                if real == _EXIF_IFD and _INTEROP_IFD in sub:
                    interop = src.get_ifd(_INTEROP_IFD)
                    if interop:
                        sub[_INTEROP_IFD] = dict(interop)
                    else:
                        del sub[_INTEROP_IFD]
                try:
                    _ifd_bytes(sub, real, b"II*\x00\x08\x00\x00\x00", 8)
                except Exception as e:
                    name = "Exif" if real == _EXIF_IFD else "GPS"
                    warnings.warn(f"EXIF {name} IFD could not be written to the TIFF; dropped ({e})", stacklevel=3)
                    continue
                if sub:
                    sub_ifds[placeholder] = (real, sub)
                    extratags.append((placeholder, "I", 1, 0, True))
    if xmp:
        extratags.append((700, "B", len(xmp), xmp, True))
    if iptc:  # as LONGs like Photoshop (exiftool flags UNDEFINED); zero padding is trimmed on read
        padded = iptc + b"\x00" * (-len(iptc) % 4)
        extratags.append((33723, "I", len(padded) // 4, np.frombuffer(padded, "<u4"), True))
    extratags.sort(key=lambda t: t[0])
    integer = arr.dtype != np.float32
    tifffile.imwrite(
        tmp,
        arr,
        photometric="minisblack" if gray else "rgb",
        planarconfig="contig",
        extrasamples=("unassalpha",) if alpha is not None else None,
        compression=compression,
        predictor=True if (compression and integer) else None,
        iccprofile=icc or None,
        resolution=dpi,
        resolutionunit="INCH" if dpi else None,
        metadata=None,
        software=False,
        extratags=extratags,
        byteorder="<",
    )
    if sub_ifds:
        _append_sub_ifds(tmp, sub_ifds)


def _ifd_bytes(values: dict[int, Any], group: int, head: bytes, offset: int) -> bytes:
    """One IFD (entries, next-IFD 0, then its data) serialised by Pillow for file offset ``offset``."""
    from PIL import TiffImagePlugin

    ifd = TiffImagePlugin.ImageFileDirectory_v2(ifh=head, group=group)
    for k, v in values.items():
        ifd[k] = v
    return ifd.tobytes(offset)


def _append_sub_ifds(tmp: Path, sub_ifds: dict[int, tuple[int, dict[int, Any]]]) -> None:
    with tmp.open("r+b") as f:
        head = f.read(16)
        endian = "<" if head[:2] == b"II" else ">"
        big = head[2:4] in (b"+\x00", b"\x00+")
        f.seek(8 if big else 4)
        (ifd0,) = struct.unpack(endian + ("Q" if big else "I"), f.read(8 if big else 4))
        f.seek(ifd0)
        (n,) = struct.unpack(endian + ("Q" if big else "H"), f.read(8 if big else 2))
        entry_size = 20 if big else 12
        first = ifd0 + (8 if big else 2)
        f.seek(first)
        table = f.read(n * entry_size)
        positions = {}
        for i in range(n):
            (tag,) = struct.unpack_from(endian + "H", table, i * entry_size)
            if tag in sub_ifds:
                positions[tag] = first + i * entry_size
        for placeholder, (real, values) in sub_ifds.items():
            f.seek(0, os.SEEK_END)
            pos = f.tell()
            if pos % 2:
                f.write(b"\x00")
                pos += 1
            f.write(_ifd_bytes(values, real, head[: 16 if big else 8], pos))
            f.seek(positions[placeholder])
            if big:
                f.write(struct.pack(endian + "HHQQ", real, 18, 1, pos))  # IFD8
            else:
                f.write(struct.pack(endian + "HHII", real, 4, 1, pos))  # LONG


def _write_jpeg(
    tmp: Path,
    color: np.ndarray,
    icc: bytes | None,
    exif: bytes | None,
    xmp: bytes | None,
    iptc: bytes | None,
    dpi: tuple[float, float] | None,
    quality: int,
) -> None:
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


def _write_webp(
    tmp: Path,
    color: np.ndarray,
    alpha: np.ndarray | None,
    icc: bytes | None,
    exif: bytes | None,
    xmp: bytes | None,
    quality: int,
    lossless: bool,
) -> None:
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
