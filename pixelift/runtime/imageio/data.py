"""ImageData and the array conversions every format shares."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


@dataclass(repr=False)
class ImageData:
    """Pixels plus everything else a file carried. See the package docstring for the per-mode table."""

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
    #: a PNG's colour and text chunks ((name, body): gAMA, cHRM, sRGB, tEXt, zTXt, iTXt), written to a PNG output
    png_chunks: tuple[tuple[bytes, bytes], ...] = ()

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
    def has_transparency(self) -> bool:
        """An alpha channel below fully opaque somewhere (an opaque one loses nothing in a JPEG)."""
        a = self.alpha
        if a is None:
            return False
        top = 1.0 if a.dtype.kind == "f" else np.iinfo(a.dtype).max
        return not bool((a >= top).all())

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


@dataclass(frozen=True)
class _WriteJob:
    """What :func:`~pixelift.runtime.imageio.write.write_image` hands a format's writer: samples already converted
    for the format, EXIF already patched, dpi already scaled, plus the options some formats use."""

    color: np.ndarray
    alpha: np.ndarray | None
    icc: bytes | None
    exif: bytes | None
    xmp: bytes | None
    iptc: bytes | None
    dpi: tuple[float, float] | None
    quality: int
    lossless: bool
    compression: str | None
    png_chunks: tuple[tuple[bytes, bytes], ...] = ()


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
        keys = ("icc", "exif", "xmp", "iptc", "dpi", "source_format", "source_mode", "png_chunks")
        base = {k: getattr(like, k) for k in keys}
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
