"""Pillow images <-> ImageData: :func:`from_pil`, :func:`to_pil` and the mode conversions Pillow decoders share."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pixelift.errors import ImageReadError
from pixelift.runtime.imageio.data import _DTYPES, ImageData, _to_uint8, _validate
from pixelift.runtime.imageio.icc import _cmyk_to_rgb
from pixelift.runtime.imageio.metadata import _EXIF_HEADER, _clean_dpi, _strip_exif_header


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
