"""Streamed enhance of one file: output rows go to disk as each row of tiles completes.

Memory is one band of tile rows (:func:`pixelift.runtime.tiling.iter_tiled_rows`) plus the writer's row of TIFF
tiles, whatever the output size; a tiled or striped TIFF input is read by region too
(:mod:`pixelift.runtime.imageio.stream_read`). The output is the in-memory path's, bit for bit, for the same
tile size: the strips are the in-memory float result cut in rows (``run_tiled`` is their concatenation), and
each goes through the same conversions (:mod:`pixelift.runtime.pixels`).

When (:func:`enhance_file`, ``stream=``)
    ``"auto"`` (the default) streams a TIFF or PNG output of :data:`STREAM_FROM_PIXELS` or more when the job can
    stream; ``"on"`` streams whatever the size, or refuses with :class:`StreamingUnsupportedError`; ``"off"``
    never streams. What cannot stream (:func:`cannot_stream`): the autopilot and model chains (a second model
    would need the first one's whole output), noise-conditioned models (the noise map is estimated over the
    whole image), SE models while ``sync_se`` is on (their statistics are the whole image's), and an
    ``outscale`` other than the model's scale (the resize filters across strip borders).

Tile size
    An explicit ``tile`` is used as given (the output is then the in-memory one, bit for bit). ``"auto"`` is
    the in-memory choice, but never the whole image and at most :data:`STREAM_MAX_TILE` (the model's own memory
    grows with the tile: ~1.1 GB at 512 px for SPAN x4 on OpenVINO), lowered where needed so that one band of float output rows stays under :data:`BAND_BYTES`:
    that bound is what makes memory independent of the output size (a x4 band of 512 px tiles over a 40,000 px
    wide output alone would be 1 GB). So with ``"auto"`` a streamed output may be tiled where the in-memory
    one was not: the two then differ like any two tile sizes (tiled vs whole: SPAN 100 dB, ESRGAN 50 dB).

Size guard
    Streaming lifts the in-memory output limit (``max_output_pixels``, there because the in-memory path holds
    about 40 bytes per output pixel): a streamed output is held to :data:`DEFAULT_MAX_STREAM_PIXELS`
    (``$PIXELIFT_MAX_STREAM_PIXELS``), against typing mistakes that would fill a disk. A ``max_output_pixels``
    set below its default still applies, and ``None`` turns both off. The free space on the output's disk is
    checked before any work against :data:`MIN_COMPRESSION` of the raw size; running out later removes the part
    file and is reported for that file alone.
"""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixelift import limits
from pixelift.errors import (
    ImageTooLargeError,
    ImageWriteError,
    InvalidImageError,
    OutputExistsError,
    StreamingUnsupportedError,
    UsageError,
)
from pixelift.models.architectures import architecture
from pixelift.runtime import imageio, tiling
from pixelift.runtime.imageio import default_output_path
from pixelift.runtime.imageio.metadata import png_chunks_note
from pixelift.runtime.imageio.stream_read import RowSource, open_rows, read_rows_checked
from pixelift.runtime.imageio.stream_write import (
    STREAM_FORMATS,
    StreamShape,
    check_format_limits,
    write_streamed,
)
from pixelift.runtime.pipeline import FileOutcome, Pipeline, Result
from pixelift.runtime.pixels import (
    FILL_REACH,
    LANCZOS_REACH,
    fill_hidden,
    from_float,
    model_alpha,
    to_float,
    unpremultiply,
    upscale_rows,
)
from pixelift.runtime.session import LoadedModel

STREAM_MODES = ("auto", "on", "off")
#: ``stream="auto"`` streams outputs from this size on (in memory they would need about 4 GB)
STREAM_FROM_PIXELS = 100_000_000
DEFAULT_MAX_STREAM_PIXELS = limits.DEFAULT_MAX_STREAM_PIXELS
ENV_MAX_STREAM_PIXELS = limits.ENV_MAX_STREAM_PIXELS
#: one band of float32 output rows (the tile accumulator) is kept under this
BAND_BYTES = 384 << 20
#: the largest auto tile when streaming (in memory: MAX_AUTO_TILE, 512 px, ~15% faster than 256 px)
STREAM_MAX_TILE = 256
#: refuse up front when the output disk cannot hold the raw size divided by this (Deflate on photos: 1.5-3x)
MIN_COMPRESSION = 8
_ALPHA_SCAN_ROWS = 256
_CONVERT_ROWS = 64


@dataclass
class StreamedResult(Result):
    """A :class:`Result` of a streamed run: the tile size used."""

    tile: int | None = None


def cannot_stream(enh: Pipeline) -> str | None:
    """Why ``enh``'s pipeline cannot be streamed, or None when it can."""
    if enh.whole_image_reason is not None:
        return enh.whole_image_reason
    if len(enh.specs) != 1:
        return f"a chain of {len(enh.specs)} models needs each model's whole output before the next one runs"
    spec = enh.specs[0]
    if architecture(spec.architecture).extra_inputs:
        return f"{spec.id} takes a noise map estimated over the whole image"
    if not spec.tile_safe and enh.tiles.sync_se:
        return (
            f"{spec.id} uses whole-image statistics (SE blocks), computed over the whole image before tiling; "
            "run it without --stream on (in memory), or stream it without them from Python with "
            "TileOptions(sync_se=False) (tiled output then differs slightly from untiled)"
        )
    if enh.outscale is not None and enh.outscale != spec.scale:
        return (
            f"--outscale {enh.outscale:g} differs from the model's scale x{spec.scale}: the final resize filters "
            "across rows"
        )
    return None


def stream_limit(enh: Pipeline) -> int | None:
    """The output-size guard for a streamed output (see the module docstring)."""
    own = enh.max_output_pixels
    if own is None:
        return None
    if own < limits.DEFAULT_MAX_OUTPUT_PIXELS:
        return own
    return enh.max_stream_pixels


def probe(src: Path) -> tuple[str, int, int] | None:
    """(format, height, width) from the file's header, without decoding pixels; None if it cannot be read
    (the full reader then reports why)."""
    from pixelift.runtime.imageio.guards import _pil_open
    from pixelift.runtime.imageio.read import _sniff

    try:
        if not src.is_file():  # a FIFO or device would block here; the reader refuses it by name
            return None
        with src.open("rb") as f:
            fmt = _sniff(f.read(32))
        if fmt == "TIFF":
            import tifffile

            with tifffile.TiffFile(src) as tif:
                page = tif.pages[0]
                return "TIFF", int(page.shape[0]), int(page.shape[1])
        if fmt is None:
            return None
        with _pil_open(src, fmt) as im:
            return fmt, int(im.height), int(im.width)
    except Exception:
        return None


def should_stream(enh: Pipeline, src: Path, dst: Path | None, *, format: str | None, mode: str = "auto") -> bool:
    """Whether ``src`` -> ``dst`` is streamed under ``mode`` (see the module docstring). Raises, before any work,
    what is refused whatever the path: a JPEG/WebP output larger than its format holds, and ``mode="on"`` for a
    job that cannot stream."""
    if mode not in STREAM_MODES:
        raise UsageError(f"stream must be one of {', '.join(STREAM_MODES)}, not {mode!r}")
    head = probe(src)
    if head is None:  # the reader will say what is wrong with the file
        return False
    src_fmt, h, w = head
    fmt = output_format(src_fmt, dst, format)
    out_h, out_w = enh.output_size(h, w)
    where = str(dst or src)
    check_format_limits(fmt, out_h, out_w, where)
    if mode == "off":
        return False
    why = cannot_stream(enh) or (None if fmt in STREAM_FORMATS else f"{fmt} cannot be written by rows")
    smallest = max((spec.min_side for spec in enh.specs), default=1)  # the autopilot chooses later
    if why is None and min(h, w) < smallest:  # padded up to the graph's smallest side, in memory
        why = f"a {w}x{h} image is smaller than the {smallest} px its models need per side"
    if mode == "on" and why:
        raise StreamingUnsupportedError(f"{where}: cannot stream: {why}")
    return why is None and (mode == "on" or out_h * out_w >= STREAM_FROM_PIXELS)


def output_format(src_format: str, dst: Path | None, format: str | None) -> str:
    """The output format as ``Enhancer.enhance_file`` picks it: asked for, else the suffix's, else the default."""
    fmt = (
        format or (imageio.format_for_path(dst) if dst else None) or imageio.default_output_format(src_format)
    ).upper()
    return {"JPG": "JPEG", "TIF": "TIFF"}.get(fmt, fmt)


def enhance_file(
    enh: Pipeline,
    src: str | Path,
    dst: str | Path | None = None,
    *,
    format: str | None = None,
    quality: int = 95,
    overwrite: bool = False,
    stream: str = "auto",
) -> tuple[Path, Result]:
    """``enh.enhance_file_in_memory``, streamed when :func:`should_stream` says so (what
    ``Enhancer.enhance_file`` runs)."""
    src = Path(src)
    dst = None if dst is None else Path(dst)
    if not should_stream(enh, src, dst, format=format, mode=stream):
        try:
            return enh.enhance_file_in_memory(src, dst, format=format, quality=quality, overwrite=overwrite)
        except ImageTooLargeError as e:
            why = cannot_stream(enh)
            if stream == "off" or why is None or "output would be" not in str(e):
                raise
            raise ImageTooLargeError(f"{e} (streaming, which lifts this limit, is not possible here: {why})") from e
    head = probe(src)
    assert head is not None
    fmt = output_format(head[0], dst, format)
    target = dst if dst is not None else default_output_path(src, fmt)
    try:
        same = target.resolve() == src.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise ImageWriteError(f"{target}: not a usable output path ({exc})") from None
    if same and not overwrite:
        raise OutputExistsError(f"{target} is the input; --overwrite (overwrite=True) replaces it")
    return stream_file(enh, src, target, format=fmt, overwrite=overwrite)


def enhance_files(
    enh: Pipeline,
    jobs: Iterable[tuple[Path, Path | None]],
    *,
    format: str | None = None,
    quality: int = 95,
    overwrite: bool = False,
    stream: str = "auto",
    on_start: Callable[[Path], None] | None = None,
) -> Iterator[FileOutcome]:
    """:func:`enhance_file` over ``jobs``, one :class:`FileOutcome` each, in order; a failed file does not stop
    the others (as ``Enhancer.enhance_files``)."""
    for src, dst in jobs:
        t0 = time.perf_counter()
        try:
            if on_start is not None:
                on_start(src)
            path, res = enhance_file(enh, src, dst, format=format, quality=quality, overwrite=overwrite, stream=stream)
            yield FileOutcome(src, path, res, None, time.perf_counter() - t0)
        except Exception as exc:  # reported per file
            yield FileOutcome(src, dst, None, exc, time.perf_counter() - t0)


def stream_file(enh: Pipeline, src: Path, dst: Path, *, format: str, overwrite: bool = False) -> tuple[Path, Result]:
    """Enhance ``src`` into ``dst`` (TIFF or PNG) by rows; memory does not depend on the output size."""
    why = cannot_stream(enh)
    if why:
        raise StreamingUnsupportedError(f"{src}: cannot stream: {why}")
    t0 = time.perf_counter()
    with open_rows(src, max_pixels=enh.max_pixels) as rows:
        h, w = rows.height, rows.width
        if h < 1 or w < 1:
            raise InvalidImageError(f"the image has no pixels ({w}x{h})")
        out_h, out_w = enh.output_size(h, w)
        _check_stream_size(enh, rows, out_h, out_w, dst)
        deep = np.dtype(rows.dtype) != np.uint8
        lm = enh.loaded(deep)[0]
        res = StreamedResult(
            [lm.spec.id],
            [lm.provider if lm.precision == "fp32" else f"{lm.provider}/{lm.precision}"],
            {lm.spec.id: list(lm.selection.rejected)},
            warnings=list(enh.warnings),
        )
        res.notes = list(rows.notes)
        dropped = png_chunks_note(rows.meta.png_chunks, format.upper())
        if dropped is not None:
            res.notes.append(dropped)
        note = enh.depth_note([lm], deep)
        if note is not None:
            res.notes.append(note)
        tile = stream_tile(enh, lm, h, w)
        if tile is not None and not lm.spec.tile_safe:
            res.notes.append(f"{lm.spec.id} uses whole-image statistics; tiled output differs slightly from untiled")
        kind = _alpha_kind(rows) if rows.has_alpha else None
        shape = StreamShape(out_h, out_w, rows.channels, rows.dtype, rows.has_alpha)
        done: list[Path] = []

        def attempt(t: int | None) -> np.ndarray:
            res.tile = t
            done.append(
                write_streamed(
                    _strips(enh, lm, rows, t, kind, res.notes),
                    dst,
                    shape,
                    rows.meta,
                    format=format,
                    overwrite=overwrite,
                    scale_dpi=enh.scale,
                )
            )
            return _DONE

        tiling.retry_smaller_tiles(attempt, tile=tile, height=h, width=w, alignment=lm.spec.alignment)
    res.seconds = time.perf_counter() - t0
    return done[-1], res


_DONE = np.empty(0, np.float32)


def stream_tile(enh: Pipeline, lm: LoadedModel, h: int, w: int) -> int | None:
    """The in-memory tile choice, lowered (for ``tile="auto"``) until a band of float output rows fits
    :data:`BAND_BYTES`."""
    tile = enh.tile_for(lm, h, w)
    if enh.tiles.tile != "auto":
        return tile
    s, a = lm.spec.scale, lm.spec.alignment
    overlap = -(-enh.overlap_for(lm.spec) // a) * a
    rows = BAND_BYTES // (3 * 4 * s * s * w)  # input rows whose float output band fits
    band = max(tiling.min_tile_for(a), (rows - 2 * overlap) // a * a)
    # "the whole image fits" (None) is not a reason to run it whole here, and the model's own memory grows with
    # the tile (OpenVINO, SPAN x4: ~1.1 GB at 512 px, measured): tiles stay at STREAM_MAX_TILE
    tile = min(band, STREAM_MAX_TILE if tile is None else min(tile, STREAM_MAX_TILE))
    return None if tile >= h and tile >= w else tile


def _check_stream_size(enh: Pipeline, rows: RowSource, out_h: int, out_w: int, dst: Path) -> None:
    what = f"{rows.width}x{rows.height} input at x{enh.scale:g}"
    limit = stream_limit(enh)
    if limit is not None and out_h * out_w > limit:
        raise_it = (
            "raise it with --max-output-pixels N|none"
            if enh.max_output_pixels == limit
            else f"raise it with {ENV_MAX_STREAM_PIXELS}=N|none (or --max-output-pixels none)"
        )
        raise ImageTooLargeError(
            f"{what}: the output would be {out_w}x{out_h} = {out_w * out_h:,} pixels, over the streamed-output "
            f"limit of {limit:,} (a guard against filling a disk by mistake). Lower --outscale, or {raise_it}"
        )
    raw = out_h * out_w * (rows.channels + int(rows.has_alpha)) * np.dtype(rows.dtype).itemsize
    folder = dst.parent if str(dst.parent) else Path(".")
    probe_dir = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    try:
        free = shutil.disk_usage(probe_dir).free
    except OSError:
        return
    if free * MIN_COMPRESSION < raw:
        raise ImageWriteError(
            f"{dst}: out of disk space before starting: the output holds {raw / 1e9:.1f} GB of raw pixels and "
            f"{free / 1e9:.1f} GB are free on {probe_dir} (at best about 1/{MIN_COMPRESSION} of the raw size after "
            "compression); free some space or write elsewhere"
        )


@dataclass(frozen=True)
class _AlphaKind:
    """How ``Enhancer.enhance_float`` treats an image's alpha, decided in one pass over the alpha rows."""

    constant: float | None  # every pixel has this value: resized, not modelled
    cut_out: bool  # every pixel 0 or opaque: resized and cut at one half


def _alpha_kind(rows: RowSource) -> _AlphaKind:
    lo, hi, binary = np.inf, -np.inf, True
    for y in range(0, rows.height, _ALPHA_SCAN_ROWS):
        _, alpha = read_rows_checked(rows, y, min(y + _ALPHA_SCAN_ROWS, rows.height))
        assert alpha is not None
        a = to_float(alpha)[0]
        lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
        binary = binary and bool(((a == 0.0) | (a == 1.0)).all())
        if lo != hi and not binary:
            break
    return _AlphaKind(lo if lo == hi else None, binary and lo != hi)


def _resized_alpha(rows: RowSource, scale: int, y0: int, y1: int) -> np.ndarray:
    """Output rows ``[y0, y1)`` of the alpha upscaled as ``Enhancer.enhance_float`` upscales a cut-out's."""
    lo, hi = max(0, y0 // scale - LANCZOS_REACH - 1), min(rows.height, -(-y1 // scale) + LANCZOS_REACH + 1)
    _, alpha = read_rows_checked(rows, lo, hi)
    assert alpha is not None
    return upscale_rows(to_float(alpha)[0], lo, rows.height, scale, y0, y1)


def _strips(
    enh: Pipeline, lm: LoadedModel, rows: RowSource, tile: int | None, kind: _AlphaKind | None, notes: list[str]
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Output strips in the output dtype: the steps of ``Enhancer.enhance_float`` and ``enhance_data``, by rows."""
    spec = lm.spec
    gray = rows.channels == 1
    const_alpha = None if kind is None else kind.constant
    cut_out = kind is not None and kind.cut_out
    premultiplied = kind is not None and const_alpha is None and not cut_out
    modelled = premultiplied
    clipped = False

    def read_color(y0: int, y1: int) -> np.ndarray:
        nonlocal clipped
        if cut_out:  # filled past its edge as in memory: FILL_REACH rows of context make the same rows
            lo, hi = max(0, y0 - FILL_REACH), min(rows.height, y1 + FILL_REACH)
            color, alpha = read_rows_checked(rows, lo, hi)
            assert alpha is not None
            rgb, clip = to_float(color)
            clipped = clipped or clip
            if gray:
                rgb = np.repeat(rgb, 3, axis=2)
            rgb = fill_hidden(rgb, to_float(alpha)[0] == 1.0)[y0 - lo : y1 - lo]
            return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
        color, alpha = read_rows_checked(rows, y0, y1)
        rgb, clip = to_float(color)
        clipped = clipped or clip
        if gray:
            rgb = np.repeat(rgb, 3, axis=2)
        if premultiplied:
            assert alpha is not None
            rgb = rgb * to_float(alpha)[0][..., None]
        return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)

    def read_alpha(y0: int, y1: int) -> np.ndarray:
        _, alpha = read_rows_checked(rows, y0, y1)
        assert alpha is not None
        return np.ascontiguousarray(np.repeat(to_float(alpha)[0][None], 3, axis=0), dtype=np.float32)

    run = lm.selection.session.run
    kw: dict[str, Any] = dict(enh.tiling_args(spec), height=rows.height, width=rows.width, tile=tile)
    colors = tiling.iter_tiled_rows(read_color, run, **kw)
    alphas: Iterator[Any] = tiling.iter_tiled_rows(read_alpha, run, **kw) if modelled else itertools.repeat(None)
    dtype = np.dtype(rows.dtype)
    for (y0, c), a in zip(colors, alphas, strict=False):
        a_strip = None
        if a is not None:
            a_y0, a_strip = a
            if a_y0 != y0 or a_strip.shape[1] != c.shape[1]:  # pragma: no cover - one plan for both
                raise RuntimeError("colour and alpha strips out of step")
        soft = _resized_alpha(rows, spec.scale, y0, y0 + c.shape[1]) if cut_out else None
        # element by element, so converted a few rows at a time: the scratch stays small
        for r0 in range(0, c.shape[1], _CONVERT_ROWS):
            part = c[:, r0 : r0 + _CONVERT_ROWS]
            out = np.clip(part, 0.0, 1.0, out=part).transpose(1, 2, 0)
            out_alpha = None
            if a_strip is not None:
                out_alpha = np.clip(model_alpha(a_strip[:, r0 : r0 + _CONVERT_ROWS])[0], 0.0, 1.0)
                out = unpremultiply(out, out_alpha)
            elif soft is not None:
                out_alpha = (soft[r0 : r0 + _CONVERT_ROWS] >= 0.5).astype(np.float32)
            elif const_alpha is not None:
                out_alpha = np.full(out.shape[:2], const_alpha, np.float32)
            if gray:
                out = out.mean(axis=2, keepdims=True)
            yield from_float(out, dtype), None if out_alpha is None else from_float(out_alpha, dtype)
        del c, a, a_strip, soft  # let go of the strip before the next band is computed
    if clipped and "float input outside 0..1 was clipped" not in notes:
        notes.append("float input outside 0..1 was clipped")


__all__ = [
    "DEFAULT_MAX_STREAM_PIXELS",
    "ENV_MAX_STREAM_PIXELS",
    "STREAM_FROM_PIXELS",
    "STREAM_MODES",
    "StreamedResult",
    "cannot_stream",
    "enhance_file",
    "enhance_files",
    "output_format",
    "probe",
    "should_stream",
    "stream_file",
    "stream_limit",
    "stream_tile",
]
