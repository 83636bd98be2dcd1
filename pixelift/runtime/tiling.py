"""Seamless tiled inference, as pure functions (numpy only; never imports torch).

Geometry (:func:`plan_tiles`)
    ``tile`` is the nominal *core* size (Real-ESRGAN's ``tile_size``): the tile count per
    axis is chosen first, ``ceil(size / tile)``. Neighbouring tiles share ``2 * overlap``
    context pixels around each internal core boundary (``overlap`` per side, Real-ESRGAN's
    ``tile_pad``). A tile that touches the image edge reads nothing past it: it is
    shifted inwards, so its core is ``overlap`` larger and every read region has the same
    size (up to one alignment unit), ``(size + 2 * overlap * (count - 1)) / count``. Pixels
    computed per pixel of the image are therefore ``1 + 2 * overlap * (count - 1) / size``
    per axis, and exactly 1 for an image that fits one tile. Core boundaries lie on the
    alignment grid and the effective overlap is ``overlap`` (at most ``tile``) rounded *up*
    to a multiple of ``alignment``, then capped where the image is too small to lay out
    that many tiles with it; every read region is a multiple of ``alignment``. Cores
    partition the image exactly.

Border (:func:`run_tiled`)
    The image edge is never padded for context: a model sees the image edge where the
    whole-image run sees it, so edge pixels come out as in an untiled run. Only the
    bottom/right are padded (``reflect`` by default, or ``replicate``) by up to
    ``alignment - 1`` pixels, the same way for every tile size; the result is cropped
    back to exactly ``(C, H*scale, W*scale)``.

Streaming (:func:`iter_tiled_rows`)
    Tiles run one row of tiles at a time; each output row is yielded as soon as no later
    tile row can touch it. Memory is one band of input and output rows, whatever the
    image height; :func:`run_tiled` is the concatenation of these strips.

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
import itertools
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from pixelift.errors import InferenceOutOfMemoryError, TileShapeError

log = logging.getLogger(__name__)

Infer = Callable[[np.ndarray], np.ndarray]  # returns a new array: the tiler may keep it as the output
Progress = Callable[[int, int], None]


class Blend(enum.StrEnum):
    LINEAR = "linear"  # feathered linear ramp
    COSINE = "cosine"  # raised-cosine (sin^2) ramp
    GAUSSIAN = "gaussian"  # Gaussian-CDF (erf) ramp, sigma = 1/6 of the zone
    CROP = "crop"  # hard crop at the core boundary, no blending (Real-ESRGAN)


#: Context pixels per side (input pixels) when no architecture's own measured overlap applies
#: (``Architecture.overlap``, see pixelift/models/architectures.py): ESRGAN's, the widest.
DEFAULT_OVERLAP = 32
#: Within 0.2 dB of the best ramp everywhere; crop leaves visible seams on SE models (Real-CUGAN).
DEFAULT_BLEND = Blend.COSINE
PAD_MODES = {"reflect": "reflect", "replicate": "edge"}
_GAUSS_SIGMA = 1.0 / 6.0


@dataclass(frozen=True)
class Tile:
    """One tile. Coordinates are input pixels of the original image, half-open ``[y0, y1)``.

    ``core`` partitions the image; ``read`` is ``core +- overlap`` except at the image edge,
    where it stops (bottom/right: at the aligned extent, up to ``alignment - 1`` pixels of
    border padding past the image), widened by up to one alignment unit on one side so that
    every tile of a plan reads the same shape.
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
        """Border padding (top, bottom, left, right) that the reads need: alignment only."""
        return 0, self.aligned_height - self.height, 0, self.aligned_width - self.width

    @property
    def overhead(self) -> float:
        """Pixels the model computes per pixel of the image (1.0: no tiling overhead)."""
        return sum(h * w for h, w in (t.read_shape for t in self.tiles)) / (self.height * self.width)


def _round_up(n: int, a: int) -> int:
    return -(-n // a) * a


def _count(size: int, tile: int | None, alignment: int) -> int:
    units = -(-size // alignment)
    return 1 if tile is None else max(1, min(units, -(-size // tile)))


def _max_overlap_units(size: int, n: int, alignment: int) -> int | None:
    """Largest overlap (alignment units) for which ``n`` tiles can be laid out: every core at
    least one unit, and each edge tile's read at least one overlap zone long; None: one tile."""
    if n < 2:
        return None
    units = -(-size // alignment)
    return units // 2 if n == 2 else max(0, (units - n) // 2)


def _bounds(size: int, n: int, alignment: int, ov_units: int) -> tuple[int, ...]:
    """Core boundaries of ``n`` tiles whose read regions (``core +- overlap``, clipped at the
    image edge) all have the same size, up to one unit, over the aligned extent."""
    units = -(-size // alignment)
    if n == 1:
        return (0, units * alignment)
    total = units + 2 * ov_units * (n - 1)  # read units over all tiles
    reads = [(i + 1) * total // n - i * total // n for i in range(n)]
    b = [0, reads[0] - ov_units]
    for r in reads[1:-1]:
        b.append(b[-1] + r - 2 * ov_units)
    b.append(units)
    return tuple(alignment * u for u in b)


def _equal_reads(bounds: tuple[int, ...], ov: int) -> list[tuple[int, int]]:
    """Each tile's read along one axis: its core +- ``ov``, stopping at the edge, then the shorter
    ones (by one alignment unit at most) widened to the longest with real pixels on one side (away
    from the edge it touches). One read shape for every tile: a backend that compiles per input
    shape (OpenVINO keeps one large static compilation) would otherwise recompile at every switch
    between two shapes (11 times on a 24 MP photo). The widened pixel is context only: the blend
    windows still ramp at ``core +- ov`` and weigh it 0 (:func:`tile_weights`). A read one unit short
    widened on both sides would have to be the whole axis, which is the longest, so one side fits."""
    n, end = len(bounds) - 1, bounds[-1]
    reads = [(bounds[i] - ov if i else 0, end if i == n - 1 else bounds[i + 1] + ov) for i in range(n)]
    longest = max(b - a for a, b in reads)
    out = []
    for a, b in reads:
        grow = longest - (b - a)
        out.append((a, b + grow) if b + grow <= end else (a - grow, b))
    return out


def plan_tiles(height: int, width: int, *, tile: int | None, overlap: int, alignment: int = 1) -> TilePlan:
    """Lay out tiles: count per axis first (``ceil(size / tile)``), then equal read sizes."""
    if height < 1 or width < 1:
        raise ValueError(f"image must be at least 1x1, got {height}x{width}")
    if alignment < 1 or overlap < 0:
        raise ValueError(f"need alignment >= 1 and overlap >= 0, got {alignment} and {overlap}")
    if tile is not None and tile < 1:
        raise ValueError(f"tile must be >= 1 or None, got {tile}")
    ny, nx = _count(height, tile, alignment), _count(width, tile, alignment)
    # context wider than the tile itself costs more than it brings
    ovu = -(-(overlap if tile is None else min(overlap, tile)) // alignment)
    for cap in (_max_overlap_units(height, ny, alignment), _max_overlap_units(width, nx, alignment)):
        if cap is not None and cap < ovu:
            ovu = cap
    ov = ovu * alignment
    ys, xs = _bounds(height, ny, alignment, ovu), _bounds(width, nx, alignment, ovu)
    y_reads, x_reads = _equal_reads(ys, ov), _equal_reads(xs, ov)
    tiles = []
    for r in range(ny):
        for c in range(nx):
            last_r, last_c = r == ny - 1, c == nx - 1
            core = (ys[r], height if last_r else ys[r + 1], xs[c], width if last_c else xs[c + 1])
            tiles.append(Tile(r, c, core, (*y_reads[r], *x_reads[c]), r > 0, not last_r, c > 0, not last_c))
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


@functools.lru_cache(maxsize=256)
def _read_window(length: int, lead: int, span: int, zone: int, before: bool, after: bool, blend: Blend) -> np.ndarray:
    """The window of ``core +- overlap`` (``span`` px from ``lead``) within a read ``length`` px long:
    0 on what the read holds beyond it (context widened to the plan's one read shape)."""
    inner = _axis_window(span, zone, before, after, blend)
    if span == length:
        return inner
    w = np.zeros(length, dtype=np.float64)
    w[lead : lead + span] = inner
    w.setflags(write=False)
    return w


def tile_weights(plan: TilePlan, tile: Tile, scale: int, blend: Blend | str) -> tuple[np.ndarray, np.ndarray]:
    """The separable blend window of ``tile`` over its read region in output pixels: ``(wy, wx)``.

    The 2-D window is ``wy[:, None] * wx[None, :]``. Ramps cover the overlap zone
    ``2 * overlap * scale`` output pixels wide, centred on the core boundary; what a read holds
    beyond ``core +- overlap`` (widened to the plan's read shape) is context only, weighted 0.
    """
    blend = Blend(blend)
    wy, wx = (_read_window(*axis, blend) for axis in _window_key(plan, tile, scale))
    return wy, wx


_AxisWindow = tuple[int, int, int, int, bool, bool]  # _read_window's arguments but the blend


def _window_key(plan: TilePlan, tile: Tile, scale: int) -> tuple[_AxisWindow, _AxisWindow]:
    """What ``tile``'s window depends on, per axis (tiles with equal keys share windows)."""
    zone = 2 * plan.overlap * scale
    axes = []
    for bounds, index, (r0, r1), before, after in (
        (plan.y_bounds, tile.row, tile.read[:2], tile.ramp_top, tile.ramp_bottom),
        (plan.x_bounds, tile.col, tile.read[2:], tile.ramp_left, tile.ramp_right),
    ):
        lo = bounds[index] - plan.overlap if before else r0
        hi = bounds[index + 1] + plan.overlap if after else r1
        axes.append(((r1 - r0) * scale, (lo - r0) * scale, (hi - lo) * scale, zone, before, after))
    return axes[0], axes[1]


@dataclass(frozen=True)
class _Ramps:
    """Where a window is not 1: its first ``lo`` entries (``head``) and those from ``hi`` on
    (``tail``); between them it is all ones (windows ramp only at their ends)."""

    head: np.ndarray
    tail: np.ndarray
    lo: int
    hi: int

    @staticmethod
    def of(w: np.ndarray) -> _Ramps:
        ones = np.flatnonzero(w == 1.0)
        lo, hi = (int(ones[0]), int(ones[-1]) + 1) if len(ones) else (len(w), len(w))
        assert np.all(w[lo:hi] == 1.0), "a window that dips inside"
        return _Ramps(w[:lo].astype(np.float32), w[hi:].astype(np.float32), lo, hi)


def _weigh(y: np.ndarray, ry: _Ramps, rx: _Ramps) -> None:
    """``y *= wy (x) wx`` (CHW, in place) where the window is not 1: its ramps, a few percent of a
    tile, instead of every pixel; equal to the full product except by an ulp in the corners."""
    if ry.lo:
        y[:, : ry.lo] *= ry.head[:, None]
    if ry.hi < y.shape[1]:
        y[:, ry.hi :] *= ry.tail[:, None]
    if rx.lo:
        y[:, :, : rx.lo] *= rx.head
    if rx.hi < y.shape[2]:
        y[:, :, rx.hi :] *= rx.tail


# --------------------------------------------------------------------------- running


def _pad(image: np.ndarray, plan: TilePlan, pad_mode: str, *, rows: bool = True) -> np.ndarray:
    """The image padded to the aligned extent (``rows=False``: columns only)."""
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {sorted(PAD_MODES)}, got {pad_mode!r}")
    _, bottom, _, right = plan.pad
    bottom = bottom if rows else 0
    if not (bottom or right):
        return image
    return np.pad(image, ((0, 0), (0, bottom), (0, right)), mode=PAD_MODES[pad_mode])  # type: ignore[call-overload,no-any-return]


def _batches(plan: TilePlan, batch: int) -> Iterator[list[Tile]]:
    """Tiles grouped by read shape (so they stack), in plan order within a group, ``batch`` at a time."""
    return _group_batches(list(plan.tiles), batch)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] < 1:
        raise ValueError(f"image must be CHW (the image's channels, then any packed extra inputs), got {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image must be floating point (0..1), got {image.dtype}")
    return np.ascontiguousarray(image, dtype=np.float32)


Read = Callable[[int, int], np.ndarray]


def _row_indices(height: int, aligned: int, pad_mode: str) -> np.ndarray:
    """Source row of each row of the aligned extent (rows past the image: border padding)."""
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {sorted(PAD_MODES)}, got {pad_mode!r}")
    return np.pad(np.arange(height), (0, aligned - height), mode=PAD_MODES[pad_mode])  # type: ignore[call-overload,no-any-return]


def _axis_weight_sum(plan: TilePlan, scale: int, blend: Blend, axis: int) -> np.ndarray:
    """Sum of all tiles' windows along one axis. Windows are separable and shared by a row (or
    column) of tiles, so the accumulated 2-D weight is the outer product of the two sums."""
    size = (plan.aligned_height if axis == 0 else plan.aligned_width) * scale
    acc = np.zeros(size, dtype=np.float64)
    seen = set()
    for t in plan.tiles:
        key = t.row if axis == 0 else t.col
        if key in seen:
            continue
        seen.add(key)
        w = tile_weights(plan, t, scale, blend)[axis]
        start = (t.read[0] if axis == 0 else t.read[2]) * scale
        acc[start : start + len(w)] += w
    return acc


def iter_tiled_rows(
    read: Read,
    infer: Infer,
    *,
    height: int,
    width: int,
    scale: int,
    tile: int | None,
    overlap: int = DEFAULT_OVERLAP,
    alignment: int = 1,
    blend: Blend | str = DEFAULT_BLEND,
    batch: int = 1,
    pad_mode: str = "reflect",
    progress: Progress | None = None,
    alloc: Callable[[tuple[int, int, int]], np.ndarray] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Run ``infer`` over an image one row of tiles at a time, yielding finished output rows.

    ``read(y0, y1)`` returns the input rows ``[y0, y1)`` (``0 <= y0 < y1 <= height``) as CHW
    floats, full width. Yields ``(out_y0, strip)``: float32 CHW strips (views into a band
    that is never written again), in order, covering output rows ``[0, height * scale)``
    exactly once. Memory: one band of tile rows; or, with ``alloc``, the one float32 array it
    returns for the whole (aligned) output, ``(C, rows, columns)``, which the bands are views of:
    no band is copied (:func:`run_tiled`). An image that fits one tile calls no ``alloc``.
    """
    blend = Blend(blend)
    if scale < 1 or batch < 1:
        raise ValueError(f"need scale >= 1 and batch >= 1, got {scale} and {batch}")
    plan = plan_tiles(height, width, tile=tile, overlap=overlap, alignment=alignment)
    s = scale
    rows = _row_indices(height, plan.aligned_height, pad_mode)
    # the weights' sums are 1 except where tiles overlap: only those rows and columns are divided
    wy_sum = _axis_weight_sum(plan, s, blend, 0).astype(np.float32)
    wx_sum = _axis_weight_sum(plan, s, blend, 1)[: width * s].astype(np.float32)
    x_div = np.flatnonzero(wx_sum != 1.0)
    total, done = len(plan.tiles), 0
    channels: int | None = None
    acc: np.ndarray | None = None  # output rows [acc_y0, acc_y0 + len) of the aligned extent
    acc_y0 = 0
    whole: np.ndarray | None = None  # alloc's array
    by_row: dict[int, list[Tile]] = {}
    for t in plan.tiles:
        by_row.setdefault(t.row, []).append(t)
    for r in range(plan.rows):
        tiles = by_row[r]
        ry0, ry1 = tiles[0].read[0], tiles[0].read[1]
        idx = rows[ry0:ry1]
        lo, hi = int(idx.min()), int(idx.max()) + 1
        windows: dict[tuple[_AxisWindow, _AxisWindow], tuple[_Ramps, _Ramps]] = {}
        block = _check_image(read(lo, hi))
        if block.shape[1:] != (hi - lo, width):
            raise ValueError(f"read({lo}, {hi}) returned {block.shape}; expected (C, {hi - lo}, {width})")
        band = _pad(block[:, idx - lo], plan, pad_mode, rows=False)
        new_acc: np.ndarray | None = None
        for group in _group_batches(tiles, batch):
            x = np.stack([band[:, :, t.read[2] : t.read[3]] for t in group])
            y = infer(x)
            rh, rw = group[0].read_shape
            if (
                not isinstance(y, np.ndarray)
                or y.ndim != 4
                or y.shape[0] != len(group)
                or y.shape[2:] != (rh * s, rw * s)
                or (channels is not None and y.shape[1] != channels)
            ):
                got = getattr(y, "shape", type(y).__name__)
                want = f"({len(group)}, C, {rh * s}, {rw * s})"
                raise TileShapeError(
                    f"model returned {got} for input tile batch {x.shape} at scale {s}; expected {want}"
                )
            if total == 1:
                # no neighbour to blend with (the window is all ones): the output as it is, not
                # accumulated, weighted and divided (bit for bit the same; 1 MP x2 CLI 2.11 -> 2.04 s)
                if progress is not None:
                    progress(1, 1)
                yield 0, y[0, :, : height * s, : width * s].astype(np.float32, copy=False)
                return
            if new_acc is None:
                channels = y.shape[1]
                # rows the previous band still shares with this one hold its sums; the others are
                # written by their first tile (assigned, not added to zeros: one pass less)
                keep = 0 if acc is None else acc_y0 + acc.shape[1] - ry0 * s
                if alloc is not None:
                    if whole is None:
                        whole = alloc((channels, plan.aligned_height * s, plan.aligned_width * s))
                    new_acc = whole[:, ry0 * s : ry1 * s]
                else:
                    new_acc = np.empty((channels, (ry1 - ry0) * s, plan.aligned_width * s), dtype=np.float32)
                    if acc is not None:
                        new_acc[:, :keep] = acc[:, acc.shape[1] - keep :]
                written = np.zeros(plan.aligned_width * s, dtype=bool)  # columns of rows [keep:] with a value
            for k, t in enumerate(group):
                key = _window_key(plan, t, s)
                ramps = windows.get(key)
                if ramps is None:  # a band's tiles share a few windows (left edge, inside, right edge)
                    wy, wx = tile_weights(plan, t, s, blend)
                    ramps = windows[key] = (_Ramps.of(wy), _Ramps.of(wx))
                yk = y[k].astype(np.float32, copy=False)
                if not yk.flags.writeable:
                    yk = yk.copy()
                _weigh(yk, *ramps)  # the model's output is the tiler's: weighted in place
                _accumulate(new_acc, yk, t.read[2] * s, keep, written)
                done += 1
                if progress is not None:
                    progress(done, total)
            del x, y  # nothing from this call survives into the next one
        assert new_acc is not None
        acc, acc_y0 = new_acc, ry0 * s
        end = plan.aligned_height * s if r == plan.rows - 1 else by_row[r + 1][0].read[0] * s
        end_img = min(end, height * s)
        if end_img > acc_y0:
            strip = acc[:, : end_img - acc_y0, : width * s]
            # in place: these rows are final (the next band copies only the rows after them)
            y_div = np.flatnonzero(wy_sum[acc_y0:end_img] != 1.0)
            if len(y_div):
                strip[:, y_div] /= wy_sum[acc_y0 + y_div][:, None]
            if len(x_div):
                strip[:, :, x_div] /= wx_sum[x_div]
            yield acc_y0, strip


def _accumulate(band: np.ndarray, y: np.ndarray, x0: int, keep: int, written: np.ndarray) -> None:
    """Add a weighted tile at column ``x0`` of ``band``: rows ``[:keep]`` (the previous band's sums)
    and columns another tile of this band already wrote are added to, the rest assigned."""
    x1 = x0 + y.shape[2]
    if keep:
        band[:, :keep, x0:x1] += y[:, :keep]
    mask = written[x0:x1]
    edges = [0, *(np.flatnonzero(mask[1:] != mask[:-1]) + 1).tolist(), len(mask)]
    for a, b in itertools.pairwise(edges):
        if mask[a]:
            band[:, keep:, x0 + a : x0 + b] += y[:, keep:, a:b]
        else:
            band[:, keep:, x0 + a : x0 + b] = y[:, keep:, a:b]
    mask[:] = True


def _group_batches(tiles: list[Tile], batch: int) -> Iterator[list[Tile]]:
    groups: dict[tuple[int, int], list[Tile]] = {}
    for t in tiles:
        groups.setdefault(t.read_shape, []).append(t)
    for group in groups.values():
        for i in range(0, len(group), batch):
            yield group[i : i + batch]


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

    Returns float32 ``(C_out, H*scale, W*scale)``: the strips of :func:`iter_tiled_rows`. See
    the module docstring for geometry, border padding and blending. Exceptions from
    ``infer`` propagate unchanged.
    """
    image = _check_image(image)
    _, height, width = image.shape
    held: list[np.ndarray] = []

    def alloc(shape: tuple[int, int, int]) -> np.ndarray:
        held.append(np.empty(shape, dtype=np.float32))
        return held[-1]

    for _, strip in iter_tiled_rows(
        lambda a, b: image[:, a:b],
        infer,
        height=height,
        width=width,
        scale=scale,
        tile=tile,
        overlap=overlap,
        alignment=alignment,
        blend=blend,
        batch=batch,
        pad_mode=pad_mode,
        progress=progress,
        alloc=alloc,
    ):
        if not held:  # one tile: its output as it is
            return np.ascontiguousarray(strip)
    # the strips were the whole array's rows, divided in place; past the image: alignment padding
    return np.ascontiguousarray(held[0][:, : height * scale, : width * scale])


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
    when its aligned extent does. Otherwise the largest multiple of ``alignment`` in
    ``[min_tile, max_tile]`` whose read square ``(tile + 2 * overlap)^2`` fits; if none
    fits, ``min_tile`` (rounded up to alignment) and the OOM retry takes it from there.
    """
    if bytes_per_input_pixel <= 0:
        raise ValueError("bytes_per_input_pixel must be > 0")
    budget = budget_fraction * available_bytes
    ov = 2 * _round_up(overlap, alignment)
    whole = _round_up(height, alignment) * _round_up(width, alignment)
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
    "iter_tiled_rows",
    "min_tile_for",
    "plan_tiles",
    "retry_smaller_tiles",
    "run_tiled",
    "run_tiled_with_retry",
    "seam_metric",
    "tile_weights",
]
