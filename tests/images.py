"""Real test images: photo crops from scikit-image's bundled data, and a flat-colour art image."""

from __future__ import annotations

import functools

import numpy as np

from pixelift.metrics import psnr
from pixelift.samples import art_image, to_chw

__all__ = ["PHOTOS", "art_image", "photo_crop", "psnr", "to_chw"]

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
