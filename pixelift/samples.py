"""Real sample images that ship with pixelift (no torch, no network).

``astronaut.png`` is a 320x320 crop of NASA's portrait of Eileen Collins, as shipped by
scikit-image (``skimage.data.astronaut``): "No known copyright restrictions, released
into the public domain."
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
from PIL import Image, ImageDraw

SAMPLE_PHOTO = "astronaut.png"
SAMPLE_PHOTO_LICENSE = "public domain (NASA; via scikit-image's data/astronaut.png)"


def sample_photo_path() -> resources.abc.Traversable:
    return resources.files("pixelift.data") / SAMPLE_PHOTO


@functools.cache
def sample_photo() -> np.ndarray:
    """The bundled photo as HWC uint8 RGB."""
    with resources.as_file(sample_photo_path()) as p, Image.open(p) as im:
        return np.asarray(im.convert("RGB")).copy()


def photo_crop(h: int, w: int, top: int = 96, left: int = 80) -> np.ndarray:
    img = sample_photo()
    return img[top : top + h, left : left + w].copy()


@functools.cache
def art_image(h: int = 64, w: int | None = None) -> np.ndarray:
    """A deterministic flat-coloured illustration: cel-shaded shapes with dark outlines,
    drawn at 4x and downsampled so edges are anti-aliased like real line art."""
    w = w or h
    s = 4
    im = Image.new("RGB", (w * s, h * s), (246, 228, 200))
    d = ImageDraw.Draw(im)
    d.ellipse((8 * s, 6 * s, (w - 10) * s, (h - 6) * s), fill=(250, 205, 180), outline=(40, 30, 30), width=3 * s)
    d.polygon(
        [(4 * s, 0), (w * s // 2, h * s // 3), (w * s - 4 * s, 0)],
        fill=(90, 60, 140),
        outline=(30, 20, 50),
        width=2 * s,
    )
    for x0 in (w * s // 3, w * s // 2 + 4 * s):
        d.ellipse(
            (x0, h * s // 2, x0 + 9 * s, h * s // 2 + 11 * s), fill=(60, 120, 200), outline=(20, 20, 40), width=2 * s
        )
    d.line((w * s // 3, h * s * 4 // 5, w * s * 2 // 3, h * s * 4 // 5), fill=(170, 50, 60), width=2 * s)
    d.rectangle((0, h * s - 8 * s, w * s, h * s), fill=(120, 180, 110))
    return np.asarray(im.resize((w, h), Image.Resampling.LANCZOS)).copy()


def content_crop(content: str, h: int, w: int) -> np.ndarray:
    """A real-image crop suited to a model's content (photo crops for photo models)."""
    return photo_crop(h, w) if content == "photo" else art_image(h, w)


def to_chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1).astype(np.float32) / 255.0)
