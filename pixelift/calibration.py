"""Real images for int8 calibration and for fidelity measurement, kept apart.

A :class:`CalibrationSource` yields *calibration* crops (used to set int8 ranges) and
*held-out* crops (used only to measure fidelity), never overlapping. By default it draws
from package data: the bundled public-domain photo (top half for calibration, bottom
half held out) and the drawn art image (drawn at one size for calibration, at another
for the held-out set). A user folder of images replaces them: the last quarter of the
files (at least one) is held out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from pixelift.models.architectures import architecture, pack
from pixelift.runtime.formats import READ_SUFFIXES
from pixelift.samples import art_image, sample_photo, to_chw

CALIB_CROP = 64
HELDOUT_CROP = 80


def _align(n: int, a: int) -> int:
    return max(a, n - n % a)


def model_input(chw: np.ndarray, architecture_name: str | None, rng: np.random.Generator) -> np.ndarray:
    """A crop as the graph input of ``architecture_name``: unchanged for a plain model; for one
    with extra inputs (a noise map) the crop gets noise at each input's default level and the
    map is packed after it, so calibration and fidelity see the operating point they serve."""
    if architecture_name is None:
        return chw
    arch = architecture(architecture_name)
    if not arch.extra_inputs:
        return chw
    level = arch.extra_inputs[0].default
    noisy = np.clip(chw + rng.normal(0.0, level, chw.shape).astype(np.float32), 0.0, 1.0)
    return pack(architecture_name, noisy[None])[0]


def _crops(img: np.ndarray, size: int, count: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    h, w = img.shape[:2]
    size = min(size, h, w)
    for _ in range(count):
        top = int(rng.integers(0, h - size + 1))
        left = int(rng.integers(0, w - size + 1))
        yield img[top : top + size, left : left + size]


class CalibrationSource:
    """``folder=None``: bundled images; else every image file in ``folder`` (sorted)."""

    def __init__(self, folder: str | Path | None = None, *, seed: int = 0) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.seed = seed
        if self.folder is not None:
            self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in READ_SUFFIXES)
            if not self.files:
                raise ValueError(f"{self.folder}: no images ({', '.join(READ_SUFFIXES)})")

    def describe(self) -> str:
        if self.folder is None:
            return "bundled: astronaut photo (top half calib / bottom half held out) + drawn art"
        return f"folder {self.folder}: {len(self.files)} images"

    def _split(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if self.folder is None:
            photo = sample_photo()
            h = photo.shape[0] // 2
            return [photo[:h], art_image(128)], [photo[h:], art_image(96, 112)]
        imgs = []
        for f in self.files:
            with Image.open(f) as im:
                imgs.append(np.asarray(im.convert("RGB")).copy())
        if len(imgs) == 1:
            h = imgs[0].shape[0] // 2
            return [imgs[0][:h]], [imgs[0][h:]]
        n_out = max(1, len(imgs) // 4)
        return imgs[:-n_out], imgs[-n_out:]

    def calibration(
        self, alignment: int = 1, count: int = 8, size: int = CALIB_CROP, *, arch: str | None = None
    ) -> list[np.ndarray]:
        """``count`` CHW float32 crops from the calibration part (as ``arch``'s graph input)."""
        rng = np.random.default_rng(self.seed)
        calib, _ = self._split()
        size = _align(size, alignment)
        out = []
        for i in range(count):
            img = calib[i % len(calib)]
            crop = next(_crops(img, size, 1, rng))
            crop = crop[: _align(crop.shape[0], alignment), : _align(crop.shape[1], alignment)]
            out.append(model_input(to_chw(crop), arch, rng))
        return out

    def heldout(
        self, alignment: int = 1, per_image: int = 2, size: int = HELDOUT_CROP, *, arch: str | None = None
    ) -> list[tuple[str, np.ndarray]]:
        """Named CHW float32 crops from the held-out part (as ``arch``'s graph input)."""
        rng = np.random.default_rng(self.seed + 1)
        _, held = self._split()
        size = _align(size, alignment)
        out = []
        for i, img in enumerate(held):
            for j, crop in enumerate(_crops(img, size, per_image, rng)):
                crop = crop[: _align(crop.shape[0], alignment), : _align(crop.shape[1], alignment)]
                name = f"heldout{i}-{j}-{crop.shape[0]}x{crop.shape[1]}"
                out.append((name, model_input(to_chw(crop), arch, rng)))
        return out
