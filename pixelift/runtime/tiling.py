"""Seamless tiled inference, as pure functions (numpy only; never imports torch).

Geometry (:func:`plan_tiles`)
    ``tile`` is the *core* size (Real-ESRGAN's ``tile_size``); the model sees the core
    plus ``overlap`` context pixels on each side (Real-ESRGAN's ``tile_pad``). The tile
    count per axis is chosen first, ``ceil(size / tile)``, then the axis is split into that
    many equal cores (sizes differ by at most one alignment unit): 1200 px with tile 1024
    gives two 600 px cores, never a 1024 px tile plus a 176 px sliver. Cores partition the
    image exactly. Core boundaries lie on the alignment grid and the effective overlap is
    ``overlap`` rounded *up* to a multiple of ``alignment``, so every read region
    ``core +- overlap`` is a multiple of ``alignment``; nothing is ever expanded inwards.
    Read regions may leave the image: those pixels come from **padding at the image
    border** (below). In tile coordinates a read region is therefore "clamped" to the
    padded image, which by construction always contains it.

Border (:func:`run_tiled`)
    The image is padded once at its outer border (``reflect`` by default, or
    ``replicate``) by the effective overlap on every side, plus up to ``alignment - 1``
    pixels at the bottom/right so the aligned extent is covered. So edge tiles have the
    same context as inner ones. The whole-image path (``tile=None``) pads identically, so
    the tile size never changes what the edge pixels look like; the result is cropped
    back to exactly ``(C, H*scale, W*scale)``.

Blending (:class:`Blend`)
    Each tile's output is weighted by a separable window that is 1 on its core interior
    and ramps only inside the overlap zone ``[b - overlap, b + overlap)`` around each
    internal core boundary ``b`` (scaled to output pixels). Ramps of two neighbours are
    mirror images (``r(t) + r(1 - t) = 1``), so weights already sum to one; we still
    divide by the accumulated weight, which is strictly positive everywhere (every ramp
    is > 0 at every pixel centre of the zone), so odd geometries stay exact too.
    ``crop`` is Real-ESRGAN's hard crop: each output pixel comes from exactly the tile
    whose core contains it. Accumulation is float32; the result is float32.

Errors
    Nothing raised by ``infer`` is caught, except :class:`InferenceOutOfMemoryError` in
    :func:`run_tiled_with_retry`, which halves the tile and retries the whole image. A
    tile output of the wrong shape raises :class:`TileShapeError` at once. Each tile's
    output is consumed immediately after its own ``infer`` call, so no buffer region is
    ever filled from another (stale) call.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from pixelift.errors import InferenceOutOfMemoryError, TileShapeError

log = logging.getLogger(__name__)

Infer = Callable[[np.ndarray], np.ndarray]
Progress = Callable[[int, int], None]


class Blend(enum.StrEnum):
    LINEAR = "linear"  # feathered linear ramp
    COSINE = "cosine"  # raised-cosine (sin^2) ramp
    GAUSSIAN = "gaussian"  # Gaussian-CDF (erf) ramp, sigma = 1/6 of the zone
    CROP = "crop"  # hard crop at the core boundary, no blending (Real-ESRGAN)


#: Context pixels per side (input pixels). Chosen by measurement (table in tests/test_tiling.py):
#: 16 is plenty for SPAN/Compact/waifu2x (> 78 dB tiled vs whole) but ESRGAN needs 32 for 45 dB.
DEFAULT_OVERLAP = 32
#: Within 0.2 dB of the best ramp everywhere; crop leaves visible seams on SE models (Real-CUGAN).
DEFAULT_BLEND = Blend.COSINE
PAD_MODES = {"reflect": "reflect", "replicate": "edge"}
_GAUSS_SIGMA = 1.0 / 6.0


@dataclass(frozen=True)
class Tile:
    """One tile. Coordinates are input pixels of the original image, half-open ``[y0, y1)``.

    ``core`` partitions the image; ``read`` is ``core +- overlap`` and may extend past the
    image (into the border padding), by at most ``overlap`` on top/left and
    ``overlap + alignment - 1`` on bottom/right.
    """

    row: int
    col: int
    core: tuple[int, int, int, int]  # y0, y1, x0, x1
    read: tuple[int, int, int, int]  # y0, y1, x0, x1
    ramp_top: bool  # a neighbour above: blend over the top overlap zone
    ramp_bottom: bool
    ramp_left: bool
    ramp_right: bool

    @property
    def read_shape(self) -> tuple[int, int]:
        y0, y1, x0, x1 = self.read
        return y1 - y0, x1 - x0


@dataclass(frozen=True)
class TilePlan:
    height: int
    width: int
    tile: int | None  # requested core size; None = whole image
    overlap: int  # effective overlap (multiple of alignment)
    alignment: int
    aligned_height: int  # height rounded up to alignment: the extent cores are laid on
    aligned_width: int
    y_bounds: tuple[int, ...]  # core boundaries on the aligned extent, 0 .. aligned_height
    x_bounds: tuple[int, ...]
    tiles: tuple[Tile, ...]

    @property
    def rows(self) -> int:
        return len(self.y_bounds) - 1

    @property
    def cols(self) -> int:
        return len(self.x_bounds) - 1

    @property
    def pad(self) -> tuple[int, int, int, int]:
        """Border padding (top, bottom, left, right) that the reads need."""
        o = self.overlap
        return o, o + self.aligned_height - self.height, o, o + self.aligned_width - self.width


def _round_up(n: int, a: int) -> int:
    return -(-n // a) * a


def _bounds(size: int, tile: int | None, alignment: int) -> tuple[int, ...]:
    """Tile count first, then equal cores on the alignment grid over the aligned extent."""
    units = -(-size // alignment)
    n = 1 if tile is None else max(1, min(units, -(-size // tile)))
    return tuple(alignment * (i * units // n) for i in range(n + 1))


def plan_tiles(height: int, width: int, *, tile: int | None, overlap: int, alignment: int = 1) -> TilePlan:
    """Lay out tiles: count per axis first (``ceil(size / tile)``), then equal core sizes."""
    if height < 1 or width < 1:
        raise ValueError(f"image must be at least 1x1, got {height}x{width}")
    if alignment < 1 or overlap < 0:
        raise ValueError(f"need alignment >= 1 and overlap >= 0, got {alignment} and {overlap}")
    if tile is not None and tile < 1:
        raise ValueError(f"tile must be >= 1 or None, got {tile}")
    ov = _round_up(overlap, alignment)
    ys, xs = _bounds(height, tile, alignment), _bounds(width, tile, alignment)
    tiles = []
    for r in range(len(ys) - 1):
        for c in range(len(xs) - 1):
            last_r, last_c = r == len(ys) - 2, c == len(xs) - 2
            core = (ys[r], height if last_r else ys[r + 1], xs[c], width if last_c else xs[c + 1])
            read = (ys[r] - ov, ys[r + 1] + ov, xs[c] - ov, xs[c + 1] + ov)
            tiles.append(Tile(r, c, core, read, r > 0, not last_r, c > 0, not last_c))
    return TilePlan(height, width, tile, ov, alignment, ys[-1], xs[-1], ys, xs, tuple(tiles))


# --------------------------------------------------------------------------- windows


def _ramp(n: int, blend: Blend) -> np.ndarray:
    """Rising ramp over ``n`` pixel centres, ``t = (j + 0.5) / n``; ``r(t) + r(1 - t) = 1``, ``r > 0``."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    if blend == Blend.LINEAR:
        return t
    if blend == Blend.COSINE:
        return np.sin(0.5 * np.pi * t) ** 2
    if blend == Blend.GAUSSIAN:
        z = (t - 0.5) / (_GAUSS_SIGMA * math.sqrt(2.0))
        return 0.5 * (1.0 + np.array([math.erf(v) for v in z]))
    raise ValueError(f"no ramp for blend mode {blend!r}")


@functools.lru_cache(maxsize=256)
def _axis_window(length: int, zone: int, before: bool, after: bool, blend: Blend) -> np.ndarray:
    """1 everywhere except rising over the first ``zone`` px (if ``before``) and falling over the last."""
    w = np.ones(length, dtype=np.float64)
    if blend == Blend.CROP:
        # Crop is the ``zone/2`` step function: 1 on the core, 0 on the context.
        half = zone // 2
        if before:
            w[:half] = 0.0
        if after:
            w[length - half :] = 0.0
    elif zone > 0:
        r = _ramp(zone, blend)
        if before:
            w[:zone] *= r
        if after:
            w[length - zone :] *= r[::-1]
    w.setflags(write=False)
    return w


def tile_weights(plan: TilePlan, tile: Tile, scale: int, blend: Blend | str) -> tuple[np.ndarray, np.ndarray]:
    """The separable blend window of ``tile`` over its read region in output pixels: ``(wy, wx)``.

    The 2-D window is ``wy[:, None] * wx[None, :]``. Ramps cover the overlap zone
    ``2 * overlap * scale`` output pixels wide, centred on the core boundary.
    """
    blend = Blend(blend)
    h, w = tile.read_shape
    zone = 2 * plan.overlap * scale
    wy = _axis_window(h * scale, zone, tile.ramp_top, tile.ramp_bottom, blend)
    wx = _axis_window(w * scale, zone, tile.ramp_left, tile.ramp_right, blend)
    return wy, wx


# --------------------------------------------------------------------------- running


def _pad(image: np.ndarray, plan: TilePlan, pad_mode: str) -> np.ndarray:
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {sorted(PAD_MODES)}, got {pad_mode!r}")
    top, bottom, left, right = plan.pad
    if not (top or bottom or left or right):
        return image
    return np.pad(image, ((0, 0), (top, bottom), (left, right)), mode=PAD_MODES[pad_mode])  # type: ignore[call-overload]


def _batches(plan: TilePlan, batch: int) -> Iterator[list[Tile]]:
    """Tiles grouped by read shape (so they stack), in plan order within a group, ``batch`` at a time."""
    groups: dict[tuple[int, int], list[Tile]] = {}
    for t in plan.tiles:
        groups.setdefault(t.read_shape, []).append(t)
    for group in groups.values():
        for i in range(0, len(group), batch):
            yield group[i : i + batch]


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] < 1:
        raise ValueError(f"image must be CHW (the image's channels, then any packed extra inputs), got {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image must be floating point (0..1), got {image.dtype}")
    return np.ascontiguousarray(image, dtype=np.float32)


def run_tiled(
    image: np.ndarray,
    infer: Infer,
    *,
    scale: int,
    tile: int | None,
    overlap: int = DEFAULT_OVERLAP,
    alignment: int = 1,
    blend: Blend | str = DEFAULT_BLEND,
    batch: int = 1,
    pad_mode: str = "reflect",
    progress: Progress | None = None,
) -> np.ndarray:
    """Run ``infer`` (NCHW float32 -> NCHW float32, ``scale`` x larger) over ``image`` (CHW) in tiles.

    Returns float32 ``(C_out, H*scale, W*scale)``. See the module docstring for geometry,
    border padding and blending. Exceptions from ``infer`` propagate unchanged.
    """
    image = _check_image(image)
    blend = Blend(blend)
    if scale < 1 or batch < 1:
        raise ValueError(f"need scale >= 1 and batch >= 1, got {scale} and {batch}")
    _, height, width = image.shape
    plan = plan_tiles(height, width, tile=tile, overlap=overlap, alignment=alignment)
    padded = _pad(image, plan, pad_mode)
    oy, ox = plan.pad[0], plan.pad[2]  # image origin inside ``padded``
    s = scale
    out_h, out_w = plan.aligned_height * s, plan.aligned_width * s
    out: np.ndarray | None = None
    weight = None if blend == Blend.CROP else np.zeros((out_h, out_w), dtype=np.float32)
    total, done = len(plan.tiles), 0

    for group in _batches(plan, batch):
        x = np.stack([padded[:, t.read[0] + oy : t.read[1] + oy, t.read[2] + ox : t.read[3] + ox] for t in group])
        y = infer(x)
        rh, rw = group[0].read_shape
        if (
            not isinstance(y, np.ndarray)
            or y.ndim != 4
            or y.shape[0] != len(group)
            or y.shape[2:] != (rh * s, rw * s)
            or (out is not None and y.shape[1] != out.shape[0])
        ):
            got = getattr(y, "shape", type(y).__name__)
            want = f"({len(group)}, C, {rh * s}, {rw * s})"
            raise TileShapeError(f"model returned {got} for input tile batch {x.shape} at scale {s}; expected {want}")
        if out is None:
            out = np.zeros((y.shape[1], out_h, out_w), dtype=np.float32)
        for k, t in enumerate(group):
            _accumulate(out, weight, y[k], t, plan, s, blend)
            done += 1
            if progress is not None:
                progress(done, total)
        del x, y  # nothing from this call survives into the next one

    assert out is not None
    if weight is not None:
        out /= weight
    return np.ascontiguousarray(out[:, : height * s, : width * s])


def _accumulate(
    out: np.ndarray, weight: np.ndarray | None, y: np.ndarray, t: Tile, plan: TilePlan, s: int, blend: Blend
) -> None:
    """Add one tile's output into the aligned-extent buffers (border-padding part discarded)."""
    ry0, ry1, rx0, rx1 = t.read
    if weight is None:  # crop: copy the core, on the aligned extent (the last core reaches the aligned edge)
        cy0, cx0 = plan.y_bounds[t.row], plan.x_bounds[t.col]
        cy1, cx1 = plan.y_bounds[t.row + 1], plan.x_bounds[t.col + 1]
        out[:, cy0 * s : cy1 * s, cx0 * s : cx1 * s] = y[
            :, (cy0 - ry0) * s : (cy1 - ry0) * s, (cx0 - rx0) * s : (cx1 - rx0) * s
        ]
        return
    wy, wx = tile_weights(plan, t, s, blend)
    # Visible part of the read region: inside [0, aligned extent).
    vy0, vy1 = max(ry0, 0), min(ry1, plan.aligned_height)
    vx0, vx1 = max(rx0, 0), min(rx1, plan.aligned_width)
    sy = slice((vy0 - ry0) * s, (vy1 - ry0) * s)
    sx = slice((vx0 - rx0) * s, (vx1 - rx0) * s)
    w2 = (wy[sy, None] * wx[None, sx]).astype(np.float32)
    oy_, ox_ = slice(vy0 * s, vy1 * s), slice(vx0 * s, vx1 * s)
    out[:, oy_, ox_] += y[:, sy, sx].astype(np.float32, copy=False) * w2
    weight[oy_, ox_] += w2


def min_tile_for(alignment: int) -> int:
    """Smallest tile the OOM retry will try: 32 px, or 4 alignment units if larger, on the grid."""
    return _round_up(max(32, 4 * alignment), alignment)


def run_tiled_with_retry(
    image: np.ndarray,
    infer: Infer,
    *,
    scale: int,
    tile: int | None,
    overlap: int = DEFAULT_OVERLAP,
    alignment: int = 1,
    blend: Blend | str = DEFAULT_BLEND,
    batch: int = 1,
    pad_mode: str = "reflect",
    progress: Progress | None = None,
    min_tile: int | None = None,
) -> np.ndarray:
    """:func:`run_tiled`, retrying the whole image with half the tile on :class:`InferenceOutOfMemoryError`.

    Only that error is caught. The tile halves (rounded down to ``alignment``, not below
    ``min_tile``, default :func:`min_tile_for`); ``tile=None`` starts from the image's
    longer side. Once the minimum has failed, the error is re-raised listing every tile
    size tried. Batch size is kept: lower it yourself if a single tile is not the problem.
    """
    image = _check_image(image)
    _, height, width = image.shape

    def run(current: int | None) -> np.ndarray:
        return run_tiled(
            image,
            infer,
            scale=scale,
            tile=current,
            overlap=overlap,
            alignment=alignment,
            blend=blend,
            batch=batch,
            pad_mode=pad_mode,
            progress=progress,
        )

    return retry_smaller_tiles(run, tile=tile, height=height, width=width, alignment=alignment, min_tile=min_tile)


def retry_smaller_tiles(
    run: Callable[[int | None], np.ndarray],
    *,
    tile: int | None,
    height: int,
    width: int,
    alignment: int,
    min_tile: int | None = None,
) -> np.ndarray:
    """``run(tile)``, then ``run`` with half the tile on each :class:`InferenceOutOfMemoryError` (see above)."""
    floor = min_tile if min_tile is not None else min_tile_for(alignment)
    tried: list[str] = []
    current = tile
    while True:
        try:
            return run(current)
        except InferenceOutOfMemoryError as exc:
            tried.append("whole image" if current is None else str(current))
            side = max(height, width) if current is None else current
            nxt = max(floor, side // 2 // alignment * alignment)
            if nxt >= side:
                raise InferenceOutOfMemoryError(
                    f"out of memory at every tile size tried ({', '.join(tried)} px; minimum {floor}): {exc}"
                ) from exc
            log.warning("out of memory with tile %s; retrying the whole image with tile %d", tried[-1], nxt)
            current = nxt


# --------------------------------------------------------------------------- memory


def available_memory_bytes() -> int | None:
    """Memory available to a new allocation: ``MemAvailable`` from /proc/meminfo, else sysconf; None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages, page = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and page > 0:
            return int(pages * page)
    except (AttributeError, OSError, ValueError):
        pass
    return None


def choose_tile(
    height: int,
    width: int,
    *,
    bytes_per_input_pixel: float,
    available_bytes: int,
    alignment: int,
    max_tile: int = 1024,
    min_tile: int = 64,
    overlap: int = DEFAULT_OVERLAP,
    budget_fraction: float = 0.75,
) -> int | None:
    """Tile (core) size from a model's measured footprint; ``None`` when the whole image fits.

    ``bytes_per_input_pixel`` is the model's peak memory per input pixel of one call
    (batch 1). The budget is ``budget_fraction * available_bytes``. The whole image fits
    when its padded extent does. Otherwise the largest multiple of ``alignment`` in
    ``[min_tile, max_tile]`` whose read square ``(tile + 2 * overlap)^2`` fits; if none
    fits, ``min_tile`` (rounded up to alignment) and the OOM retry takes it from there.
    """
    if bytes_per_input_pixel <= 0:
        raise ValueError("bytes_per_input_pixel must be > 0")
    budget = budget_fraction * available_bytes
    ov = 2 * _round_up(overlap, alignment)
    whole = (_round_up(height, alignment) + ov) * (_round_up(width, alignment) + ov)
    if whole * bytes_per_input_pixel <= budget:
        return None
    side = math.isqrt(int(budget / bytes_per_input_pixel)) - ov
    lo = _round_up(min_tile, alignment)
    best = min(max_tile, side, max(height, width)) // alignment * alignment
    return max(lo, best)


# --------------------------------------------------------------------------- seams


def seam_metric(output: np.ndarray, plan: TilePlan, scale: int, *, reference: np.ndarray | None = None) -> float:
    """How visible the tile seams are: 1.0 means no seam; > 1 a hard edge, < 1 a smeared one.

    Exactly what is computed, per direction (vertical boundaries: differences along x;
    horizontal ones: along y), on ``output`` (CHW, ``H*s x W*s``):

    * seam differences: for each internal core boundary ``b`` (input pixels), the
      absolute differences ``|x[..., b*s] - x[..., b*s - 1]|`` of the two output pixels
      straddling it, over all channels and the full length of the boundary;
    * other differences: the same at every other *input-pixel* boundary ``k*s - 1 ->
      k*s`` (``0 < k < W``, not a core boundary). Differences inside one input pixel's
      ``s x s`` block are left out: sub-pixel neighbours of an upscaler are smoother than
      neighbours across input pixels, and mixing them in would bias the ratio by
      ~30% on its own.

    The metric is ``mean(seam differences) / mean(other differences)``, both directions
    pooled (each difference counts once). No internal boundary: 1.0. With
    ``reference`` (e.g. the whole-image output), the result is divided by the
    reference's own metric on the same plan, cancelling what the image content at the
    seam lines contributes.
    """
    x = np.asarray(output, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    s = scale
    if x.shape[1:] != (plan.height * s, plan.width * s):
        raise ValueError(f"output {x.shape} does not match plan {plan.height}x{plan.width} at scale {s}")
    seam_sum = seam_n = other_sum = other_n = 0.0
    for axis, bounds, size in ((2, plan.x_bounds, plan.width), (1, plan.y_bounds, plan.height)):
        d = np.abs(np.diff(x, axis=axis)).sum(axis=0)  # d[i] = |x[i+1] - x[i]|, summed over channels
        per_index = d.sum(axis=0 if axis == 2 else 1)  # totals per difference index i
        n_line = x.shape[0] * d.shape[0 if axis == 2 else 1]  # channels x boundary length
        is_seam = np.zeros(size, dtype=bool)  # indexed by input-pixel boundary k (1..size-1)
        is_seam[[b for b in bounds[1:-1] if b < size]] = True
        k = np.arange(1, size)
        totals = per_index[k * s - 1]
        seam_sum += float(totals[is_seam[k]].sum())
        seam_n += float(is_seam[k].sum()) * n_line
        other_sum += float(totals[~is_seam[k]].sum())
        other_n += float((~is_seam[k]).sum()) * n_line
    if seam_n == 0 or other_n == 0 or other_sum == 0:
        return 1.0
    metric = (seam_sum / seam_n) / (other_sum / other_n)
    if reference is not None:
        metric /= seam_metric(reference, plan, scale)
    return metric


__all__ = [
    "DEFAULT_BLEND",
    "DEFAULT_OVERLAP",
    "Blend",
    "Tile",
    "TilePlan",
    "available_memory_bytes",
    "choose_tile",
    "min_tile_for",
    "plan_tiles",
    "retry_smaller_tiles",
    "run_tiled",
    "run_tiled_with_retry",
    "seam_metric",
    "tile_weights",
]
