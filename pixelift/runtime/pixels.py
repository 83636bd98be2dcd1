"""Sample conversions every enhance path shares (in memory and streamed alike, so the two agree bit for
bit): integer or float samples to 0..1 float and back, the alpha a model returns, unpremultiplying, and
the final resize."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image

from pixelift.errors import InvalidImageError

#: alpha below this counts as transparent when colour is unpremultiplied
ALPHA_EPS = 1.0 / 1024


#: elements per chunk of the conversions below: each pass over a chunk stays in the CPU's cache
#: (a 12 MP x2 output is 144 million samples; whole-array passes ran at memory speed, 4 times)
CHUNK = 1 << 18


def _chunks(a: np.ndarray) -> Iterator[slice]:
    """Slices of about CHUNK elements along the first axis of ``a`` (2-D or more)."""
    step = max(1, CHUNK // max(1, a[0].size))
    for i in range(0, len(a), step):
        yield slice(i, i + step)


def to_float(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """Samples as 0..1 float32, and whether float input had values outside 0..1 (then clipped)."""
    if a.dtype in (np.uint8, np.uint16):
        peak = np.float32(np.iinfo(a.dtype).max)
        src = a.reshape(1, -1) if a.ndim < 2 else a
        out = np.empty(src.shape, np.float32)
        for c in _chunks(src):
            np.divide(src[c], peak, out=out[c], dtype=np.float32)
        return out.reshape(a.shape), False
    f = a.astype(np.float32)
    if not np.isfinite(f).all():
        bad = int(f.size - np.count_nonzero(np.isfinite(f)))
        raise InvalidImageError(
            f"the image holds {bad:,} NaN or infinite sample(s); pixelift refuses them rather than spread them "
            "through the model (replace them first, e.g. numpy.nan_to_num)"
        )
    clipped = bool(f.min() < 0.0 or f.max() > 1.0)
    return np.clip(f, 0.0, 1.0), clipped


def from_float(f: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """0..1 float to ``dtype``; works in one scratch buffer (12 MP x4 outputs are GBs)."""
    if dtype in (np.uint8, np.uint16):
        peak = float(np.iinfo(dtype).max)
        src = f.reshape(1, -1) if f.ndim < 2 else f
        out = np.empty(src.shape, dtype)
        for c in _chunks(src):
            g = np.multiply(src[c], peak, dtype=np.float32)
            np.rint(g, out=g)
            np.clip(g, 0.0, peak, out=g)
            out[c] = g
        return out.reshape(f.shape)
    return np.clip(f, 0.0, 1.0).astype(dtype, copy=False)


def model_alpha(a_chw: np.ndarray) -> np.ndarray:
    """Alpha as the model returned it (3 equal channels in, 3 slightly different out): their mean, (1, H, W)."""
    return np.clip(a_chw.mean(axis=0, keepdims=True), 0.0, 1.0)


def unpremultiply(out: np.ndarray, out_alpha: np.ndarray) -> np.ndarray:
    """Colour (HWC, premultiplied before the model) divided by alpha (HW); 0 where alpha is about 0."""
    safe = np.maximum(out_alpha, ALPHA_EPS)[..., None]
    return np.where(out_alpha[..., None] > ALPHA_EPS, np.clip(out / safe, 0.0, 1.0), 0.0).astype(np.float32)


def resize_hwc(f: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize float HWC with area averaging when shrinking and Lanczos when enlarging."""
    h, w = f.shape[:2]
    if (h, w) == (height, width):
        return f
    method = Image.Resampling.BOX if height * width < h * w else Image.Resampling.LANCZOS
    out = np.empty((height, width, f.shape[2]), np.float32)
    for c in range(f.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(f[..., c], dtype=np.float32))
        out[..., c] = np.asarray(plane.resize((width, height), method))
    return np.clip(out, 0.0, 1.0, out=out)  # Lanczos overshoots


#: how far (px) a cut-out's edge colours are carried into its hidden part before a model sees it
FILL_REACH = 16


def _nearest_along(known: np.ndarray, axis: int, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the index along ``axis`` of the nearest ``known`` pixel on that line (left/up wins a tie),
    and whether one lies within ``reach``."""
    n = known.shape[axis]
    shape = [1, 1]
    shape[axis] = n
    pos = np.arange(n, dtype=np.int32).reshape(shape)
    before = np.maximum.accumulate(np.where(known, pos, np.int32(-(reach + 2) * 4)), axis=axis)
    flipped = np.flip(known, axis=axis)
    after = (n - 1) - np.maximum.accumulate(np.where(flipped, pos, np.int32(-(reach + 2) * 4)), axis=axis)
    after = np.flip(after, axis=axis)
    d_before, d_after = pos - before, after - pos
    take_before = d_before <= d_after
    index = np.where(take_before, before, after)
    return np.clip(index, 0, n - 1), np.minimum(d_before, d_after) <= reach


def fill_hidden(rgb: np.ndarray, known: np.ndarray, reach: int = FILL_REACH) -> np.ndarray:
    """HWC colour whose pixels outside ``known`` (HW) take the nearest known colour along their row, else
    along their column, within ``reach`` px (else 0). A model then sees a cut-out's edge colours carried
    outwards instead of its hidden colour (premultiplied, black: SPAN's sharpening lit a bright rim up to
    2 px inside the edge, +48 levels). A row depends only on rows within ``reach`` of it, so a band read
    with that much context fills its rows as the whole image does."""
    out = np.where(known[..., None], rgb, 0.0).astype(np.float32)
    idx, near = _nearest_along(known, 1, reach)
    rows = np.arange(known.shape[0])[:, None]
    row_fill = near & ~known
    out[row_fill] = rgb[rows, idx][row_fill]
    have = known | row_fill
    idx, near = _nearest_along(have, 0, reach)
    cols = np.arange(known.shape[1])[None, :]
    col_fill = near & ~have
    out[col_fill] = out[idx, cols][col_fill]
    return out


#: Lanczos' reach in input samples on each side (a = 3, Pillow's LANCZOS)
LANCZOS_REACH = 3


def _lanczos_taps(size: int, scale: int, o0: int, o1: int) -> tuple[np.ndarray, np.ndarray]:
    """Input indices and float32 weights, ``(o1 - o0, 6)``, of outputs ``[o0, o1)`` of a Lanczos-3 upscale of
    ``size`` samples by ``scale``, Pillow's kernel and centres; taps past the edge weigh 0, the rest renormalised.
    A sample's taps depend on its index only, so any band of outputs gets the same ones."""
    centre = (np.arange(o0, o1, dtype=np.float64) + 0.5) / scale
    idx = np.floor(centre - LANCZOS_REACH + 0.5).astype(np.int64)[:, None] + np.arange(2 * LANCZOS_REACH)
    x = idx + 0.5 - centre[:, None]
    w = np.where(np.abs(x) < LANCZOS_REACH, np.sinc(x) * np.sinc(x / LANCZOS_REACH), 0.0)
    w[(idx < 0) | (idx >= size)] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, size - 1), w.astype(np.float32)


def upscale_rows(band: np.ndarray, first: int, height: int, scale: int, y0: int, y1: int) -> np.ndarray:
    """Output rows ``[y0, y1)`` of a Lanczos upscale by the integer ``scale`` of an HW plane ``height`` rows
    high, of which ``band`` holds rows ``[first, first + len(band))`` (at least the 3 each side that the
    outputs reach, where the image has them). Float32, clipped to 0..1; bit-identical whichever band
    computes a row, so a streamed image and a whole one agree exactly (Pillow's ``box`` did not, by 2e-6)."""
    band = np.asarray(band, np.float32)
    if scale == 1:
        return band[y0 - first : y1 - first].copy()
    ix, wx = _lanczos_taps(band.shape[1], scale, 0, band.shape[1] * scale)
    iy, wy = _lanczos_taps(height, scale, y0, y1)
    lo = int(iy.min())
    rows = band[lo - first : int(iy.max()) + 1 - first]
    wide = np.zeros((len(rows), ix.shape[0]), np.float32)
    for t in range(ix.shape[1]):  # tap by tap, in one order: every element sums the same way in any band
        wide += rows[:, ix[:, t]] * wx[:, t]
    out = np.zeros((y1 - y0, wide.shape[1]), np.float32)
    for t in range(iy.shape[1]):
        out += wide[iy[:, t] - lo] * wy[:, t, None]
    return np.clip(out, 0.0, 1.0, out=out)


__all__ = [
    "ALPHA_EPS",
    "FILL_REACH",
    "LANCZOS_REACH",
    "fill_hidden",
    "from_float",
    "model_alpha",
    "resize_hwc",
    "to_float",
    "unpremultiply",
    "upscale_rows",
]
