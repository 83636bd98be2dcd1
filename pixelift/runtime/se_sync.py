"""Tiled runs of SE models with whole-image statistics (numpy only; never imports torch).

A squeeze-excitation block scales its features by a function of their global spatial
mean, so tiles that each take their own mean disagree (Real-CUGAN: ~43 dB tiled vs
whole). The model's SE-sync artifact (target :data:`SE_TARGET`, built by
:mod:`pixelift.export.se_sync`, which documents its inputs and outputs) lets every
SE block report statistics and take its mean from outside. :func:`run_tiled_synced`:

1. **Statistics passes, one per SE block.** Every tile runs block ``k``'s statistics
   graph (the network up to block ``k`` only, blocks before it fed the means found so
   far) with ``se_box`` = the part of the image the tile owns: its core, opened to
   infinity on the image-border sides. The graph returns the sum and count of block
   ``k``'s input features whose receptive-field centre lies in that box. The boxes
   partition the whole image's feature grid (reads start on the alignment grid, so tile
   and whole-image feature grids coincide), and an owned feature is computed from real
   context as long as the overlap covers its receptive field, so ``sum(sums) /
   sum(counts)`` over tiles *is* the whole image's mean for block ``k``.
2. **Render pass.** Every tile runs the full graph with ``se_mix = 1`` and those means,
   and is blended by :func:`pixelift.runtime.tiling.run_tiled` as usual.

Why sequential: block ``k``'s mean depends on the means the earlier blocks used. One
full pass with every tile on its own means gets only block 0 right (Real-CUGAN x2,
192x256 photo, tile 64: 40.3 dB), and each further full pass fixes one more block
(47.2, 65.2, 86 dB), each costing a whole model run. The truncated statistics graphs
reach the exact result at about 1.9 extra runs in FLOPs (Real-CUGAN: the graphs up to
blocks 0..3 are ~8/39/61/78% of the network).

A plan with a single tile (``tile=None``, or a tile as large as the image) runs the
plain model once: exactly the untiled result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pixelift.artifacts import SE_TARGET, Artifact
from pixelift.errors import PixeliftError
from pixelift.providers.options import ProviderOptions
from pixelift.runtime import tiling

#: Box edge standing for "no limit" (image-border side of an edge tile).
OPEN = 1.0e6


class FeedSession(Protocol):
    output_names: tuple[str, ...]

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class SEInfo:
    """The SE blocks of a model, as recorded in its artifact manifests (``se_blocks``)."""

    channels: tuple[int, ...]

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> SEInfo | None:
        blocks = manifest.get("se_blocks") or []
        return cls(tuple(int(b["channels"]) for b in blocks)) if blocks else None


def _box(t: tiling.Tile, plan: tiling.TilePlan) -> tuple[float, float, float, float]:
    """The region ``t`` owns, in its own input pixels: its core, open towards the image border."""
    ry, rx = t.read[0], t.read[2]
    y0 = -OPEN if t.row == 0 else float(plan.y_bounds[t.row] - ry)
    y1 = OPEN if t.row == plan.rows - 1 else float(plan.y_bounds[t.row + 1] - ry)
    x0 = -OPEN if t.col == 0 else float(plan.x_bounds[t.col] - rx)
    x1 = OPEN if t.col == plan.cols - 1 else float(plan.x_bounds[t.col + 1] - rx)
    return y0, y1, x0, x1


def _feeds(
    x: np.ndarray, boxes: np.ndarray, mix: float, means: list[np.ndarray], info: SEInfo
) -> dict[str, np.ndarray]:
    """Feeds for the SE-sync graph; ``means`` may be shorter than the block list (statistics graphs)."""
    n = len(x)
    feeds = {"input": x, "se_box": boxes.astype(np.float32), "se_mix": np.array([mix], np.float32)}
    for k, c in enumerate(info.channels[: len(means)]):
        feeds[f"se_{k}"] = np.broadcast_to(means[k].astype(np.float32).reshape(1, c, 1, 1), (n, c, 1, 1))
    return feeds


def estimate_means(
    image: np.ndarray,
    stats: list[FeedSession],
    info: SEInfo,
    *,
    tile: int | None,
    overlap: int = tiling.DEFAULT_OVERLAP,
    alignment: int = 1,
    batch: int = 1,
    pad_mode: str = "reflect",
    progress: Callable[[], None] | None = None,
) -> list[np.ndarray]:
    """Whole-image SE means (one ``(C_k,)`` float64 array per block), computed tile by tile.

    ``stats[k]`` is block ``k``'s statistics session (inputs ``input``, ``se_box``,
    ``se_0..se_{k-1}``; outputs ``se_sum_k``, ``se_count_k``). Block ``k`` is computed
    with the exact means of the blocks before it, so every mean is exact (as far as the
    overlap covers the receptive field).
    """
    image = tiling._check_image(image)
    _, height, width = image.shape
    plan = tiling.plan_tiles(height, width, tile=tile, overlap=overlap, alignment=alignment)
    padded = tiling._pad(image, plan, pad_mode)
    oy, ox = plan.pad[0], plan.pad[2]
    means: list[np.ndarray] = []
    for k, c in enumerate(info.channels):
        sess = stats[k]
        i_sum, i_count = sess.output_names.index(f"se_sum_{k}"), sess.output_names.index(f"se_count_{k}")
        total, count = np.zeros(c), 0.0
        for group in tiling._batches(plan, batch):
            x = np.stack([padded[:, t.read[0] + oy : t.read[1] + oy, t.read[2] + ox : t.read[3] + ox] for t in group])
            feeds = _feeds(x, np.array([_box(t, plan) for t in group]), 1.0, means, info)
            outs = sess.run_feeds({name: feeds[name] for name in ("input", "se_box", *(f"se_{j}" for j in range(k)))})
            total += outs[i_sum].astype(np.float64).sum(axis=0).reshape(-1)
            count += float(outs[i_count].astype(np.float64).sum())
            if progress is not None:
                for _ in group:
                    progress()
            del x, outs
        means.append(total / count)
    return means


@dataclass(frozen=True)
class SESessions:
    """Sessions on a model's SE-sync artifact: the full graph and one statistics graph per block."""

    info: SEInfo
    render: FeedSession
    stats: tuple[FeedSession, ...]


def run_tiled_synced(
    image: np.ndarray,
    sessions: SESessions,
    *,
    scale: int,
    tile: int | None,
    whole: tiling.Infer,
    overlap: int = tiling.DEFAULT_OVERLAP,
    alignment: int = 1,
    blend: tiling.Blend | str = tiling.DEFAULT_BLEND,
    batch: int = 1,
    pad_mode: str = "reflect",
    progress: tiling.Progress | None = None,
) -> np.ndarray:
    """:func:`pixelift.runtime.tiling.run_tiled` with whole-image SE means (module doc).

    ``whole`` runs the plain model; it is used when the plan has a single tile. Progress
    counts every model call: ``(blocks + 1) * tiles`` of them, the statistics ones cheaper.
    """
    image = tiling._check_image(image)
    _, height, width = image.shape
    kw: dict[str, Any] = dict(scale=scale, overlap=overlap, alignment=alignment, blend=blend, batch=batch)
    plan = tiling.plan_tiles(height, width, tile=tile, overlap=overlap, alignment=alignment)
    n = len(plan.tiles)
    if n == 1:
        return tiling.run_tiled(image, whole, tile=tile, pad_mode=pad_mode, progress=progress, **kw)
    info = sessions.info
    passes = len(info.channels)
    total, done = (passes + 1) * n, 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    means = estimate_means(
        image,
        list(sessions.stats),
        info,
        tile=tile,
        overlap=overlap,
        alignment=alignment,
        batch=batch,
        pad_mode=pad_mode,
        progress=step,
    )
    offset = passes * n

    def render(x: np.ndarray) -> np.ndarray:
        boxes = np.tile(np.array([[-OPEN, OPEN, -OPEN, OPEN]]), (len(x), 1))
        return sessions.render.run_feeds(_feeds(x, boxes, 1.0, means, info))[0]

    def render_progress(d: int, _t: int) -> None:
        if progress is not None:
            progress(offset + d, total)

    return tiling.run_tiled(image, render, tile=tile, pad_mode=pad_mode, progress=render_progress, **kw)


# --------------------------------------------------------------------------- artifacts


class SEArtifactMissingError(PixeliftError):
    """An artifact that should carry SE-sync data does not."""


_CACHE: dict[tuple[str, str, str], SESessions] = {}
_LOCK = threading.Lock()


def open_se_sessions(
    art: Artifact, provider: str, options: ProviderOptions | Mapping[str, Any] | None = None
) -> SESessions:
    """Sessions on the SE-sync artifact, on the provider already selected for the plain model.

    ``provider`` is the selection's label (``cpu``, ``openvino``, ``openvino:GPU``...);
    ``options`` the options it was opened with (typed, or a mapping of option names).
    """
    from pixelift.providers import PROVIDERS, provider_options

    info = SEInfo.from_manifest(art.manifest)
    if info is None:
        raise SEArtifactMissingError(f"{art.path}: manifest lists no SE blocks")
    opts = provider_options(provider.split(":", 1)[0], options)
    key = (art.manifest["sha256"], provider, repr(opts))
    with _LOCK:
        got = _CACHE.get(key)
        if got is None:
            backend = PROVIDERS[provider.split(":", 1)[0]]
            stats = tuple(backend.open(art.file(f"stats_{k}.onnx"), opts) for k in range(len(info.channels)))
            got = SESessions(info, backend.open(art.path, opts), stats)
            _CACHE[key] = got
    return got


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


__all__ = [
    "SE_TARGET",
    "SEArtifactMissingError",
    "SEInfo",
    "SESessions",
    "clear_cache",
    "estimate_means",
    "open_se_sessions",
    "run_tiled_synced",
]
