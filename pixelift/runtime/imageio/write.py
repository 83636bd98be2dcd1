"""write_image: validates, converts the samples for the format, patches EXIF, dispatches to the format's writer."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pixelift.errors import AlphaNotSupportedError, ImageWriteError, OutputExistsError, PixeliftError
from pixelift.paths import atomic_path
from pixelift.runtime.formats import WRITE_FORMATS, default_output_format, format_for_path
from pixelift.runtime.imageio.data import ImageData, _to_uint8, _to_uint16, _validate, _WriteJob
from pixelift.runtime.imageio.icc import _icc_space
from pixelift.runtime.imageio.metadata import _patch_exif, _strip_exif_header
from pixelift.runtime.imageio.pillow_formats import _write_jpeg, _write_webp
from pixelift.runtime.imageio.png import _write_png
from pixelift.runtime.imageio.tiff import _write_tiff

# format -> writer; every format in WRITE_FORMATS has one. The writer gets the temp file atomic_path renames into place.
_WRITERS: dict[str, Callable[[Path, _WriteJob], None]] = {
    "PNG": _write_png,
    "TIFF": _write_tiff,
    "JPEG": _write_jpeg,
    "WEBP": _write_webp,
}


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
        raise OutputExistsError(f"{path}: already exists; --overwrite (overwrite=True) replaces it")

    color, alpha, icc = data.color, data.alpha, data.icc
    if fmt in ("JPEG", "WEBP"):
        color = _to_uint8(color)
        alpha = None if alpha is None else _to_uint8(alpha)
    elif fmt == "PNG" and color.dtype == np.float32:
        color = _to_uint16(color)
        alpha = None if alpha is None else _to_uint16(alpha)
    if fmt == "JPEG" and alpha is not None:
        if not data.has_transparency:  # opaque everywhere: the JPEG loses nothing
            alpha = None
        elif not flatten_alpha:
            raise AlphaNotSupportedError(
                f"{path}: JPEG cannot hold transparency; write PNG, TIFF or WebP (--format png), or pass "
                "flatten_alpha=True to composite the image on white"
            )
        else:
            color, alpha = _flatten_on_white(color, alpha), None
    if fmt == "WEBP" and color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
        if _icc_space(icc) == b"GRAY":
            icc = None  # a gray profile does not describe RGB pixels
    dpi = None if data.dpi is None else (data.dpi[0] * scale_dpi, data.dpi[1] * scale_dpi)
    exif = _strip_exif_header(data.exif)
    if exif:
        exif = _patch_exif(exif, scale=scale_dpi, size=(color.shape[1], color.shape[0]))

    job = _WriteJob(
        color, alpha, icc, exif, data.xmp, data.iptc, dpi, quality, lossless, compression, data.png_chunks
    )
    try:
        with atomic_path(path, replace=overwrite) as tmp:
            _WRITERS[fmt](tmp, job)
    except PixeliftError:
        raise
    except Exception as e:
        raise ImageWriteError(f"{path}: cannot write {fmt} ({type(e).__name__}: {e})") from e
    return path


def _flatten_on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    top = 255.0
    a = alpha.astype(np.float32)[:, :, None] / top
    out = color.astype(np.float32) * a + top * (1.0 - a)
    return np.clip(np.round(out), 0, top).astype(np.uint8)
