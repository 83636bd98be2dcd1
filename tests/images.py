"""Real test images: photo crops from scikit-image's bundled data, and a flat-colour art image."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


@functools.cache
def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    return np.ascontiguousarray(img[..., :3])


def photo_crop(name: str = "astronaut", h: int = 64, w: int | None = None, top: int = 0, left: int = 0) -> np.ndarray:
    """HWC uint8 crop of a real photo. Default offsets pick a textured region."""
    w = w or h
    img = _photo(name)
    top = top or (img.shape[0] - h) // 3
    left = left or (img.shape[1] - w) // 3
    return img[top : top + h, left : left + w].copy()


@functools.cache
def art_image(h: int = 64, w: int | None = None) -> np.ndarray:
    """A deterministic flat-coloured illustration: cel-shaded shapes with dark outlines."""
    w = w or h
    im = Image.new("RGB", (w * 4, h * 4), (246, 228, 200))
    d = ImageDraw.Draw(im)
    s = 4
    d.ellipse((8 * s, 6 * s, (w - 10) * s, (h - 6) * s), fill=(250, 205, 180), outline=(40, 30, 30), width=3 * s)
    d.polygon([(4 * s, 0), (w * s // 2, h * s // 3), (w * s - 4 * s, 0)], fill=(90, 60, 140), outline=(30, 20, 50), width=2 * s)
    d.ellipse((w * s // 3, h * s // 2, w * s // 3 + 9 * s, h * s // 2 + 11 * s), fill=(60, 120, 200), outline=(20, 20, 40), width=2 * s)
    d.ellipse((w * s // 2 + 4 * s, h * s // 2, w * s // 2 + 13 * s, h * s // 2 + 11 * s), fill=(60, 120, 200), outline=(20, 20, 40), width=2 * s)
    d.line((w * s // 3, h * s * 4 // 5, w * s * 2 // 3, h * s * 4 // 5), fill=(170, 50, 60), width=2 * s)
    d.rectangle((0, h * s - 8 * s, w * s, h * s), fill=(120, 180, 110))
    return np.asarray(im.resize((w, h), Image.Resampling.LANCZOS)).copy()


def to_chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1).astype(np.float32) / 255.0)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)
