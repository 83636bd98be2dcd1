"""The Python API: ``Enhancer(model).enhance(image)`` and ``.enhance_file(src, dst)``.

A pipeline is a list of model steps followed by one resize to ``outscale`` (area when
shrinking, Lanczos when enlarging). Colour and alpha are processed separately; colour is
premultiplied by alpha first so transparent pixels cannot bleed dark fringes into edges.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from pixelift import limits, logs
from pixelift.artifacts import SE_TARGET, Builder, resolve_artifact
from pixelift.errors import AlphaNotSupportedError, ImageWriteError, InvalidImageError, OutputExistsError, UsageError
from pixelift.models import DEFAULT_MODEL
from pixelift.models.architectures import architecture, pack
from pixelift.models.spec import ModelSpec
from pixelift.providers.base import device_memory
from pixelift.providers.select import Request
from pixelift.runtime import autopilot, footprint, imageio, noise, se_sync, tiling
from pixelift.runtime import stream as streaming
from pixelift.runtime.footprint import tile_memory_budget
from pixelift.runtime.imageio import default_output_path
from pixelift.runtime.pipeline import FileOutcome, Progress, Result, TileOptions, TilingArgs
from pixelift.runtime.pixels import (
    fill_hidden,
    from_float,
    model_alpha,
    resize_hwc,
    to_float,
    unpremultiply,
    upscale_rows,
)
from pixelift.runtime.session import LoadedModel, load

log = logging.getLogger(__name__)

ImageLike = TypeVar("ImageLike", Image.Image, np.ndarray)
#: the denoiser ``denoise="auto"`` puts first in the chain
DENOISER = "ffdnet-rgb"
#: below this estimated sigma (8-bit levels) an image counts as clean and is not denoised
CLEAN_SIGMA = 1.0
MAX_DENOISE_LEVEL = 75.0


class Enhancer:
    """Run one model, or a chain of models, on images. Sessions open on first use.

    ``provider`` is ``auto``, ``cpu``, ``openvino`` or ``openvino:GPU``; with
    ``strict=True`` a provider that cannot run raises instead of falling back.
    """

    def __init__(
        self,
        model: str | Sequence[str] = DEFAULT_MODEL,
        *,
        provider: str = "auto",
        strict: bool = False,
        outscale: float | None = None,
        tiles: TileOptions | None = None,
        auto_export: bool = True,
        progress: Progress | None = None,
        max_pixels: int | None = imageio.DEFAULT_MAX_PIXELS,
        max_output_pixels: int | None = limits.DEFAULT_MAX_OUTPUT_PIXELS,
        max_stream_pixels: int | None = limits.DEFAULT_MAX_STREAM_PIXELS,
        precision: str = "auto",
        fast: bool = False,
        builder: Builder | None = None,
        denoise: str | float | None = None,
        denoise_strength: float = 1.0,
        deep_precision: str | None = None,
    ) -> None:
        """Validates every argument here (typed errors from :mod:`pixelift.errors`); opens nothing.

        ``builder`` builds a missing artifact (default: the installed export stage, when the
        ``export`` extra is there); ``auto_export=False`` never builds.

        ``denoise``: ``None`` (default: a noise-conditioned model in the chain gets the noise
        map estimated from its input), ``"auto"`` (also put :data:`DENOISER` first, and skip
        it on images where no noise is measured), ``"off"``, or a noise level (sigma in 8-bit
        units, 0 to 75) used as a constant map. ``denoise_strength`` (0 to 2) scales the map,
        like the strength slider of a photo editor: below 1 keeps more grain and detail.

        ``deep_precision``: the precision for 16-bit and float images. Default: fp32 where ``precision`` is
        ``"auto"`` without ``fast`` (the gate is measured on 8-bit crops, and bf16 keeps 8 significant bits:
        a 16-bit sky came back in 1/256 steps), else ``precision`` itself, said in a note when reduced.
        """
        from pixelift import models
        from pixelift.precision import CHOICES
        from pixelift.providers import validate_provider

        self.model_ids = [model] if isinstance(model, str) else list(model)
        if not self.model_ids:
            raise UsageError("an Enhancer needs at least one model")
        self.denoise = parse_denoise(denoise)
        self.denoise_strength = limits.parse_range(denoise_strength, 0.0, 2.0, "denoise_strength")
        conditioned = [m for m in self.model_ids if takes_noise_map([m])]
        if self.denoise == "off" and conditioned:
            raise UsageError(f"{conditioned[0]} needs a noise level: use denoise 'auto' or a level, not 'off'")
        # the denoiser step the autopilot adds (skipped on clean images), or None
        self._auto_denoiser = DENOISER if self.denoise not in (None, "off") and not conditioned else None
        if self.denoise_strength != 1.0 and not (conditioned or self._auto_denoiser):
            raise UsageError(
                f"denoise_strength (--denoise-strength) scales a denoiser's noise map, and {', '.join(self.model_ids)} "
                f"has no denoiser: add denoise 'auto' (--denoise auto) or a denoise model (-m {DENOISER})"
            )
        if self._auto_denoiser is not None:
            self.model_ids.insert(0, self._auto_denoiser)
        self.specs = [models.get(m) for m in self.model_ids]  # fails fast on unknown ids
        self.request = Request(provider=validate_provider(provider), strict=bool(strict))
        self.outscale = None if outscale is None else limits.parse_scale(outscale)
        if tiles is not None and not isinstance(tiles, TileOptions):
            raise UsageError(f"tiles must be a TileOptions, not {type(tiles).__name__}")
        self.tiles = tiles or TileOptions()
        self.auto_export = auto_export
        self.builder = builder
        self.progress = progress
        # decompression-bomb guard for enhance_file, and the output-size guard; None = no limit
        self.max_pixels = limits.resolve_limit(
            max_pixels, limits.DEFAULT_MAX_PIXELS, limits.ENV_MAX_PIXELS, "max_pixels"
        )
        self.max_output_pixels = limits.resolve_limit(
            max_output_pixels, limits.DEFAULT_MAX_OUTPUT_PIXELS, limits.ENV_MAX_OUTPUT_PIXELS, "max_output_pixels"
        )
        #: a streamed output's own guard (see :mod:`pixelift.runtime.stream`); None = no limit
        self.max_stream_pixels = limits.resolve_limit(
            max_stream_pixels, limits.DEFAULT_MAX_STREAM_PIXELS, limits.ENV_MAX_STREAM_PIXELS, "max_stream_pixels"
        )
        #: the "auto" tile's activation budget: the tile options', else PIXELIFT_TILE_MEMORY's (validated
        #: either way); None: from the memory available per image
        from_env = limits.tile_memory_bytes()
        self.tile_memory: int | None = from_env if self.tiles.memory is None else int(self.tiles.memory)
        limits.compile_cache_bytes()  # a bad value is refused here, not met later as a backend's failure
        if precision not in CHOICES:
            raise UsageError(f"precision must be one of {', '.join(CHOICES)}, not {precision!r}")
        # auto: the fastest measured precision whose fidelity vs fp32 meets the gate
        # (50 dB; 40 dB with fast=True), see pixelift.precision
        self.precision = precision
        self.fast = bool(fast)
        if deep_precision is not None and deep_precision not in CHOICES:
            raise UsageError(f"deep_precision must be one of {', '.join(CHOICES)}, not {deep_precision!r}")
        self.deep_precision = deep_precision or ("fp32" if precision == "auto" and not self.fast else precision)
        self._loaded: list[LoadedModel] | None = None
        self._loaded_deep: list[LoadedModel] | None = None
        #: the warnings loading the models logged (see :mod:`pixelift.logs`); every result carries them
        self.warnings: tuple[str, ...] = ()
        self._se: dict[str, se_sync.SESessions | str] = {}  # model id -> sessions, or why not

    #: why this pipeline needs the whole image before it knows what to run (it cannot be streamed), or None
    whole_image_reason: str | None = None

    @property
    def scale(self) -> float:
        return self.outscale if self.outscale is not None else float(np.prod([s.scale for s in self.specs]))

    def loaded(self, deep: bool = False) -> list[LoadedModel]:
        """The models' sessions; ``deep``: for a 16-bit or float image (at :attr:`deep_precision`)."""
        if deep and self.deep_precision != self.precision:
            if self._loaded_deep is None:
                self._loaded_deep = self._load(self.deep_precision)
            return self._loaded_deep
        if self._loaded is None:
            self._loaded = self._load(self.precision)
        return self._loaded

    def _load(self, precision: str) -> list[LoadedModel]:
        with logs.decisions() as said:
            loaded = [
                load(m, self.request, auto_export=self.auto_export, precision=precision, fast=self.fast, builder=self.builder)
                for m in self.model_ids
            ]
        self.warnings = tuple(dict.fromkeys((*self.warnings, *said)))
        return loaded

    def depth_note(self, loaded: list[LoadedModel], deep: bool) -> str | None:
        """What a 16-bit or float image should know of the precision it ran at, or None."""
        if not deep:
            return None
        reduced = sorted({lm.precision for lm in loaded} - {"fp32"})
        if reduced:
            return (
                f"{', '.join(reduced)} keeps fewer significant bits than this image has (bf16: 8): its output is "
                "quantised more coarsely than 16 bits; --precision fp32 keeps the depth"
            )
        if self.precision != self.deep_precision:
            return DEEP_NOTE
        return None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The output's size: halves round up (223 px at x1.5 is 335, not Python's round-half-even 334)."""
        return math.floor(height * self.scale + 0.5), math.floor(width * self.scale + 0.5)

    def check_size(self, height: int, width: int) -> None:
        """Refuse an empty image, and an output (or the models' intermediate) over the output
        limit, before anything is allocated or loaded."""
        if height < 1 or width < 1:
            raise InvalidImageError(f"the image has no pixels ({width}x{height})")
        chain = int(np.prod([s.scale for s in self.specs]))
        what = f"{width}x{height} input at x{self.scale:g}"
        limits.check_output_size(*self.output_size(height, width), self.max_output_pixels, what)
        limits.check_output_size(height * chain, width * chain, self.max_output_pixels, f"{what} (x{chain} model run)")

    # --- core ---------------------------------------------------------------------------

    def _run_model(
        self, lm: LoadedModel, chw: np.ndarray, notes: list[str], alpha: np.ndarray | None = None
    ) -> np.ndarray:
        """``chw``: premultiplied by ``alpha`` (HW), when given, as a noise estimate must know."""
        spec = lm.spec
        h, w = chw.shape[1:]
        small = spec.min_side
        if h < small or w < small:  # mirrored up to what the graph's own border padding needs, then cropped
            grown = np.pad(chw, ((0, 0), (0, max(0, small - h)), (0, max(0, small - w))), mode="reflect")
            return self._run_model(lm, grown, notes)[:, : h * spec.scale, : w * spec.scale]
        if spec.channels == 1 and len(chw) == 3 and not (np.array_equal(chw[0], chw[1]) and np.array_equal(chw[0], chw[2])):
            # a one-channel network on a colour image: each channel on its own, or the colour is lost
            notes.append(f"{spec.id} sees one channel: red, green and blue ran separately (a colour model sees them together)")
            planes = [self._run_model(lm, np.repeat(chw[c : c + 1], 3, axis=0), notes, alpha)[:1] for c in range(3)]
            return np.concatenate(planes, axis=0)
        tile = self.tile_for(lm, h, w)
        chw = np.ascontiguousarray(chw, dtype=np.float32)
        if architecture(spec.architecture).extra_inputs:  # the noise map travels with the image
            chw = pack(spec.architecture, chw[None], [self._noise_map(chw, notes, alpha)])[0]
        kw = self.tiling_args(spec)
        run = lm.selection.session.run
        synced = not spec.tile_safe and self.tiles.sync_se
        if not synced or se_sync.SEInfo.from_manifest(lm.artifact.manifest) is None:
            if tile is not None and not spec.tile_safe:
                notes.append(f"{spec.id} uses whole-image statistics; tiled output differs slightly from untiled")
            return tiling.run_tiled_with_retry(chw, run, tile=tile, min_tile=self._min_tile(spec), **kw)

        def attempt(t: int | None) -> np.ndarray:
            # SE model: a tiled run first computes the whole image's SE means (runtime.se_sync)
            if len(tiling.plan_tiles(h, w, tile=t, overlap=kw["overlap"], alignment=spec.alignment).tiles) > 1:
                sessions = self._se_sessions(lm, notes)
                if sessions is not None:
                    return se_sync.run_tiled_synced(chw, sessions, tile=t, whole=run, **kw)
            return tiling.run_tiled(chw, run, tile=t, **kw)

        return tiling.retry_smaller_tiles(
            attempt, tile=tile, height=h, width=w, alignment=spec.alignment, min_tile=self._min_tile(spec)
        )

    @staticmethod
    def _min_tile(spec: ModelSpec) -> int:
        # a tile's read can be about half its size plus the overlap: twice the graph's smallest side
        return max(tiling.min_tile_for(spec.alignment), 2 * spec.min_side)

    def overlap_for(self, spec: ModelSpec) -> int:
        """Context pixels per side between tiles: the one asked for, or the architecture's measured one."""
        return architecture(spec.architecture).overlap if self.tiles.overlap is None else self.tiles.overlap

    def tiling_args(self, spec: ModelSpec) -> TilingArgs:
        """The tiler's keyword arguments for ``spec`` (in-memory, streamed and SE-synced runs alike)."""
        return TilingArgs(
            scale=spec.scale,
            overlap=self.overlap_for(spec),
            alignment=spec.alignment,
            blend=self.tiles.blend,
            batch=self.tiles.batch,
            progress=self.progress,
        )

    def tile_for(self, lm: LoadedModel, h: int, w: int) -> int | None:
        """The tile size for an ``h`` x ``w`` input of ``lm``: the one asked for, or "auto" from free memory."""
        tile = self.tiles.tile
        if isinstance(tile, str):  # "auto": TileOptions admits no other string
            budget = self.tile_memory
            if budget is None:  # from free memory, and a GPU's own where the session runs on one
                device = device_memory(lm.selection.session)
                budget = min(tile_memory_budget(), device) if device is not None else tile_memory_budget()
            tile = footprint.auto_tile(
                lm.spec, lm.provider, h, w, budget, precision=lm.precision, overlap=self.overlap_for(lm.spec)
            )
        return tile if tile is None else max(tile, self._min_tile(lm.spec))

    def _noise_map(self, chw: np.ndarray, notes: list[str], alpha: np.ndarray | None = None) -> np.ndarray:
        """CHW sigma map (0..1 units) for a noise-conditioned model: the level asked for, or the
        noise-level function estimated from the image; times the strength. Premultiplied colour
        (``alpha`` given) carries its noise times alpha: the map is too."""
        if isinstance(self.denoise, float):
            level = noise.constant_map(
                (chw.shape[1], chw.shape[2], chw.shape[0]), self.denoise / 255 * self.denoise_strength
            )
            return np.ascontiguousarray((level if alpha is None else level * alpha[..., None]).transpose(2, 0, 1))
        est, image, alpha = _estimate(chw, alpha)
        note = f"estimated noise sigma {est.sigma * 255:.1f} (8-bit levels), strength {self.denoise_strength:g}"
        if note not in notes:
            notes.append(note)
        sigma = est.sigma_map(image, self.denoise_strength)
        return np.ascontiguousarray((sigma if alpha is None else sigma * alpha[..., None]).transpose(2, 0, 1))

    @staticmethod
    def _conditioned(lm: LoadedModel) -> bool:
        return bool(architecture(lm.spec.architecture).extra_inputs)

    def _noisy(self, chw: np.ndarray, notes: list[str], *, auto: bool, alpha: np.ndarray | None = None) -> bool:
        """Does a denoiser have work on this image? Strength 0 or level 0 is no denoising at all
        (a noise-conditioned network still alters an image at sigma 0); the autopilot's step
        also passes images where no noise is measured."""
        if self.denoise_strength == 0 or self.denoise == 0:
            notes.append("denoise skipped: strength or level 0")
            return False
        if not auto or isinstance(self.denoise, float):
            return True
        sigma = _estimate(chw, alpha)[0].sigma * 255
        if sigma < CLEAN_SIGMA:
            notes.append(f"denoise skipped: no noise measured (sigma {sigma:.2f} of 8-bit levels < {CLEAN_SIGMA})")
            return False
        return True

    def _se_sessions(self, lm: LoadedModel, notes: list[str]) -> se_sync.SESessions | None:
        """Sessions on the SE-sync artifact (exported on first use), on the plain model's provider.
        Resolved once per Enhancer: the artifact is hashed once, and a failure is logged once."""
        if lm.spec.id not in self._se:
            try:
                art = resolve_artifact(lm.spec.id, SE_TARGET, builder=self.builder, auto_build=self.auto_export)
                self._se[lm.spec.id] = se_sync.open_se_sessions(art, lm.selection.provider, lm.selection.options)
            except Exception as exc:  # no artifact, no torch, a backend that cannot open it: tile unsynced
                log.warning("%s: tiling without whole-image SE statistics: %s", lm.spec.id, exc)
                self._se[lm.spec.id] = str(exc)
        got = self._se[lm.spec.id]
        if isinstance(got, str):
            msg = f"{lm.spec.id} uses whole-image statistics; tiled output differs slightly from untiled ({got})"
            if msg not in notes:
                notes.append(msg)
            return None
        return got

    def enhance_float(
        self, color: np.ndarray, alpha: np.ndarray | None = None, *, deep: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None, Result]:
        """Float HWC colour (C = 1 or 3) and optional HW alpha, all in 0..1; ``deep``: the image has more
        than 8 bits per sample (see :attr:`deep_precision`)."""
        t0 = time.perf_counter()
        self.check_size(color.shape[0], color.shape[1])
        loaded = self.loaded(deep)
        res = Result(
            [lm.spec.id for lm in loaded],
            [lm.provider if lm.precision == "fp32" else f"{lm.provider}/{lm.precision}" for lm in loaded],
            {lm.spec.id: list(lm.selection.rejected) for lm in loaded},
            warnings=list(self.warnings),
        )
        note = self.depth_note(loaded, deep)
        if note is not None:
            res.notes.append(note)
        h0, w0 = color.shape[:2]
        gray = color.shape[2] == 1
        rgb = np.repeat(color, 3, axis=2) if gray else color
        if alpha is not None and float(alpha.min()) == float(alpha.max()):
            const_alpha: float | None = float(alpha.min())
            alpha = None
        else:
            const_alpha = None
        # a cut-out (palette transparency, a mask: every pixel fully transparent or opaque) stays one: a
        # model given its hard edge rings (SPAN left opaque specks 9 px out), so it is resized and cut at
        # one half instead; its colour is not premultiplied but carried past the edge (fill_hidden)
        cut_out = alpha is not None and bool(((alpha == 0.0) | (alpha == 1.0)).all())
        if cut_out and alpha is not None:
            rgb = fill_hidden(rgb, alpha == 1.0)
        elif alpha is not None:
            rgb = rgb * alpha[..., None]
        chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
        a_chw = None
        if alpha is not None and not cut_out:
            a_chw = np.ascontiguousarray(np.repeat(alpha[None], 3, axis=0), dtype=np.float32)
        for lm in loaded:
            seen = alpha if alpha is not None and alpha.shape == chw.shape[1:] else None  # at the input's size
            if self._conditioned(lm) and not self._noisy(chw, res.notes, auto=lm.spec.id == self._auto_denoiser, alpha=seen):
                i = res.models.index(lm.spec.id)  # "models" says what ran: a skipped denoiser did not
                del res.models[i], res.providers[i]
                continue
            chw = self._run_model(lm, chw, res.notes, seen)
            if a_chw is not None:
                a_chw = np.repeat(model_alpha(self._run_model(lm, a_chw, res.notes)), 3, axis=0)
        out = np.clip(chw, 0.0, 1.0, out=chw).transpose(1, 2, 0)
        hh, ww = self.output_size(h0, w0)
        out = resize_hwc(out, hh, ww)
        out_alpha = None
        if a_chw is not None:
            out_alpha = np.clip(resize_hwc(a_chw[:1].transpose(1, 2, 0), hh, ww)[..., 0], 0.0, 1.0)
            out = unpremultiply(out, out_alpha)
        elif cut_out and alpha is not None:
            k = hh // h0
            if (hh, ww) == (h0 * k, w0 * k):  # as a streamed output computes it, band by band
                soft = upscale_rows(alpha, 0, h0, k, 0, hh)
            else:
                soft = np.clip(resize_hwc(alpha[..., None], hh, ww)[..., 0], 0.0, 1.0)
            out_alpha = (soft >= 0.5).astype(np.float32)
        elif const_alpha is not None:
            out_alpha = np.full((hh, ww), const_alpha, np.float32)
        if gray:
            out = out.mean(axis=2, keepdims=True)
        res.seconds = time.perf_counter() - t0
        return out, out_alpha, res

    # --- public ---------------------------------------------------------------------

    def enhance_data(self, data: imageio.ImageData) -> tuple[imageio.ImageData, Result]:
        color, clipped = to_float(data.color)
        alpha = None if data.alpha is None else to_float(data.alpha)[0]
        out, out_alpha, res = self.enhance_float(color, alpha, deep=data.color.dtype != np.uint8)
        if clipped:
            res.notes.append("float input outside 0..1 was clipped")
        res.notes = [*data.notes, *res.notes]  # what reading did (CMYK, palette...) comes first
        dtype = data.color.dtype
        return (
            replace(
                data,
                color=from_float(out, dtype),
                alpha=None if out_alpha is None else from_float(out_alpha, dtype),
                notes=res.notes,
            ),
            res,
        )

    def enhance(self, image: ImageLike) -> ImageLike:
        """Enhance a PIL image or an ndarray (HW, HWC with 1/3/4 channels); same type and dtype back."""
        if isinstance(image, Image.Image):
            data = imageio.from_pil(image)
            out, _ = self.enhance_data(data)
            return imageio.to_pil(out)
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr3 = arr[..., None]
        elif arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
            arr3 = arr
        else:
            raise InvalidImageError(f"expected an HxW or HxWxC (C=1,3,4) array, got shape {arr.shape}")
        if arr.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
            raise InvalidImageError(f"unsupported dtype {arr.dtype}; use uint8, uint16 or float")
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise InvalidImageError(f"the array has no pixels (shape {arr.shape})")
        color, alpha = (arr3[..., :3], arr3[..., 3]) if arr3.shape[2] == 4 else (arr3, None)
        data = imageio.ImageData.from_arrays(color, alpha)
        out, _ = self.enhance_data(data)
        result = out.color if out.alpha is None else np.concatenate([out.color, out.alpha[..., None]], axis=2)
        return result[..., 0] if arr.ndim == 2 else result

    def enhance_file(
        self,
        src: str | Path,
        dst: str | Path | None = None,
        *,
        format: str | None = None,
        quality: int = 95,
        overwrite: bool = False,
        stream: str = "auto",
    ) -> tuple[Path, Result]:
        """Read, enhance and write one file, carrying metadata; returns the output path. A large
        output (100 MP or more) is streamed, in bands of rows, where the pipeline allows it
        (``stream``: auto, on or off, as the CLI's ``--stream``; :mod:`pixelift.runtime.stream`)."""
        return streaming.enhance_file(
            self, src, dst, format=format, quality=quality, overwrite=overwrite, stream=stream
        )

    def enhance_file_in_memory(
        self,
        src: str | Path,
        dst: str | Path | None = None,
        *,
        format: str | None = None,
        quality: int = 95,
        overwrite: bool = False,
    ) -> tuple[Path, Result]:
        """:meth:`enhance_file` with the whole image in memory, never streamed."""
        job = self._prepare(Path(src), None if dst is None else Path(dst), format, overwrite)
        out, res = self._compute(job)
        return self._write(job, out, quality, overwrite), res

    def enhance_files(
        self,
        jobs: Iterable[tuple[str | Path, str | Path | None]],
        *,
        format: str | None = None,
        quality: int = 95,
        overwrite: bool = False,
        prefetch: int = 1,
        on_start: Callable[[Path], None] | None = None,
        on_done: Callable[[FileOutcome], None] | None = None,
    ) -> Generator[FileOutcome, None, None]:
        """Enhance many files; decoding and encoding overlap with the models.

        ``jobs`` are ``(src, dst)`` pairs (``dst=None``: beside the input). The next
        ``prefetch`` inputs are decoded, and the previous output encoded, on two worker
        threads while the models run on the caller's thread (the models already use every
        core for large tiles; the decode, blend and encode steps are single-threaded).
        ``prefetch=0`` runs the files one at a time. One :class:`FileOutcome` per job, in
        order; a file that fails is reported there and the others go on. ``on_start(src)`` is
        called on the caller's thread as each file's models start; ``on_done(outcome)`` as each file
        ends, on the thread that ended it (its writer's: the outcome is yielded only once the next
        file's models are done, which a reader waiting on a batch of large photos should not wait for).
        """
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) or not 0 <= prefetch <= 8:
            raise UsageError(f"prefetch must be a whole number from 0 to 8, not {prefetch!r}")
        pending = [(Path(a), None if b is None else Path(b)) for a, b in jobs]
        if prefetch == 0:
            for src, dst in pending:
                t0 = time.perf_counter()
                try:
                    if on_start is not None:
                        on_start(src)
                    path, res = self.enhance_file_in_memory(
                        src, dst, format=format, quality=quality, overwrite=overwrite
                    )
                    outcome = FileOutcome(src, path, res, None, time.perf_counter() - t0)
                except Exception as exc:  # reported per file: a batch goes on past a bad file
                    outcome = FileOutcome(src, dst, None, exc, time.perf_counter() - t0)
                if on_done is not None:
                    on_done(outcome)
                yield outcome
            return
        with ThreadPoolExecutor(1, "pixelift-read") as reader, ThreadPoolExecutor(1, "pixelift-write") as writer:
            reads: deque[tuple[Path, Future[_FileJob]]] = deque()
            writes: deque[Future[FileOutcome]] = deque()
            queue = iter(pending)

            def read_next() -> None:
                nxt = next(queue, None)
                if nxt is not None:
                    fut = reader.submit(self._prepare, nxt[0], nxt[1], format, overwrite)
                    reads.append((nxt[0], fut))

            def ended(outcome: FileOutcome) -> FileOutcome:
                if on_done is not None:
                    on_done(outcome)
                return outcome

            def finish(src: Path, job: _FileJob, t0: float, out: imageio.ImageData, res: Result) -> FileOutcome:
                try:
                    path = self._write(job, out, quality, overwrite)
                except Exception as exc:
                    return ended(FileOutcome(src, job.dst, None, exc, time.perf_counter() - t0))
                return ended(FileOutcome(src, path, res, None, time.perf_counter() - t0))

            for _ in range(prefetch):
                read_next()
            while reads:
                src, fut = reads.popleft()
                # its time from its turn on: a read that overlapped the previous file's compute is
                # not that file's time twice (a file failing to decode took the previous one's)
                t0 = time.perf_counter()
                read_next()
                try:
                    job = fut.result()
                    if on_start is not None:
                        on_start(src)
                    out, res = self._compute(job)
                    writes.append(writer.submit(finish, src, job, t0, out, res))
                    del out
                except Exception as exc:
                    failed: Future[FileOutcome] = Future()
                    failed.set_result(ended(FileOutcome(src, None, None, exc, time.perf_counter() - t0)))
                    writes.append(failed)
                while writes and (writes[0].done() or len(writes) > 1):
                    yield writes.popleft().result()
            while writes:
                yield writes.popleft().result()

    # --- one file in three steps (enhance_files runs them on different threads) -----------

    def _prepare(self, src: Path, dst: Path | None, format: str | None, overwrite: bool) -> _FileJob:
        data = imageio.read_image(src, max_pixels=self.max_pixels)
        fmt = (
            format
            or (imageio.format_for_path(dst) if dst else None)
            or imageio.default_output_format(data.source_format)
        ).upper()
        dst = dst if dst is not None else default_output_path(src, fmt)
        try:
            same = dst.resolve() == src.resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte, a name too long
            raise ImageWriteError(f"{dst}: not a usable output path ({exc})") from None
        if same and not overwrite:
            raise OutputExistsError(f"{dst} is the input; --overwrite (overwrite=True) replaces it")
        folder = next((p for p in dst.parents if p.exists()), None)  # the folder the output goes in, or its nearest
        if folder is not None and not folder.is_dir():
            raise ImageWriteError(f"{dst}: {folder} is a file, not a folder")
        if fmt == "JPEG" and data.has_transparency:  # refused before the models run, not after
            raise AlphaNotSupportedError(f"{src}: has transparency, which JPEG cannot hold; write PNG, TIFF or WebP")
        return _FileJob(src, dst, fmt, imageio.fit_metadata(data, fmt))

    def _compute(self, job: _FileJob) -> tuple[imageio.ImageData, Result]:
        return self.enhance_data(job.data)

    def _write(self, job: _FileJob, out: imageio.ImageData, quality: int, overwrite: bool) -> Path:
        return imageio.write_image(
            out, job.dst, format=job.fmt, quality=quality, overwrite=overwrite, scale_dpi=self.scale
        )


@dataclass(frozen=True)
class _FileJob:
    """One decoded input and where its output goes."""

    src: Path
    dst: Path
    fmt: str
    data: imageio.ImageData
    #: the source file's bytes when it is a JPEG (the autopilot reads its quantisation tables)
    jpeg: bytes | None = None


def _estimate(chw: np.ndarray, alpha: np.ndarray | None) -> tuple[noise.NoiseEstimate, np.ndarray, np.ndarray | None]:
    """The noise estimate of a CHW image, the HWC image it describes and the alpha the map must be
    scaled by: with ``alpha`` (the image premultiplied by it, at its size), the straight colour of the
    visible part is measured (premultiplied, noise fades with alpha and a hidden part reads as clean)."""
    image = chw.transpose(1, 2, 0)
    if alpha is None or alpha.shape != image.shape[:2]:
        return noise.estimate_noise(image), image, None
    straight = unpremultiply(image, alpha)
    return noise.estimate_noise(straight, mask=alpha > 0.5), straight, alpha


#: the note of a 16-bit or float image that ``auto`` ran at fp32 (information, not a warning: see logs.INFO_NOTES)
DEEP_NOTE = "more than 8 bits per sample: run at fp32, which keeps them (auto's reduced precisions are gated on 8-bit images)"


def takes_noise_map(model_ids: Sequence[str]) -> bool:
    """Whether one of these models is noise-conditioned (takes a noise map beside the image)."""
    from pixelift import models

    return any(architecture(models.get(m).architecture).extra_inputs for m in model_ids)


class AutoEnhancer(Enhancer):
    """The autopilot: each image is analysed (:mod:`pixelift.runtime.autopilot`) and runs through
    the steps chosen for it (denoise -> de-JPEG -> upscale), then is resized to ``outscale``.
    Takes the options of :class:`Enhancer` except ``model`` and ``denoise``; an Enhancer per
    distinct pipeline is kept warm."""

    whole_image_reason = "the autopilot chooses its models per image, after analysing the whole image"

    def __init__(self, *, outscale: float = 2.0, **options: Any) -> None:
        for name in ("model", "denoise"):
            if name in options:
                raise UsageError(f"the autopilot chooses the {name} itself; do not pass {name}=")
        # validates everything; the strength is the denoiser's, in the pipelines that have one
        strength = limits.parse_range(options.pop("denoise_strength", 1.0), 0.0, 2.0, "denoise_strength")
        template = Enhancer(autopilot.UPSCALERS[("photo", 2)], outscale=outscale, **options)
        self.__dict__.update(template.__dict__)
        self.denoise_strength = strength
        self.model_ids = []
        self.specs = []
        self._options = options
        self._pipelines: dict[tuple[str, ...], Enhancer] = {}
        self._pipelines_lock = threading.Lock()
        self._local = threading.local()

    def plan_for(self, color: np.ndarray) -> autopilot.Plan:
        """The plan for a float HWC image (the source JPEG's tables are used inside enhance_file)."""
        return autopilot.plan(autopilot.analyse(color, file_bytes=getattr(self._local, "jpeg", None)), self.scale)

    def _pipeline(self, models: list[str]) -> Enhancer:
        with self._pipelines_lock:
            enh = self._pipelines.get(tuple(models))
            if enh is None:
                strength = self.denoise_strength if takes_noise_map(models) else 1.0
                enh = self._pipelines[tuple(models)] = Enhancer(
                    models, outscale=self.outscale, denoise_strength=strength, **self._options
                )
        return enh

    def enhance_data(self, data: imageio.ImageData) -> tuple[imageio.ImageData, Result]:
        color, _ = to_float(data.color)
        p = self.plan_for(color)
        info = {"analysis": p.analysis.to_dict(), "steps": p.models, "reasons": p.reasons()}
        if not p.steps:  # nothing to restore and no upscale: only the resize to outscale
            self.check_size(color.shape[0], color.shape[1])
            hh, ww = self.output_size(color.shape[0], color.shape[1])
            out_alpha = None
            if data.alpha is not None:
                alpha = to_float(data.alpha)[0][..., None]
                out_alpha = from_float(resize_hwc(alpha, hh, ww)[..., 0], data.alpha.dtype)
            res = Result([], [], notes=[*data.notes, *(f"autopilot: {r}" for r in p.reasons())], autopilot=info)
            color_out = from_float(resize_hwc(color, hh, ww), data.color.dtype)
            return replace(data, color=color_out, alpha=out_alpha, notes=res.notes), res
        enh = self._pipeline(p.models)
        enh.progress = self.progress
        out, res = enh.enhance_data(data)
        res.notes = [*res.notes, *(f"autopilot: {r}" for r in p.reasons())]
        res.autopilot = info
        return replace(out, notes=res.notes), res

    def _prepare(self, src: Path, dst: Path | None, format: str | None, overwrite: bool) -> _FileJob:
        job = super()._prepare(src, dst, format, overwrite)
        if job.data.source_format != "JPEG":
            return job
        try:  # a JPEG's quantisation tables tell its quality exactly
            return replace(job, jpeg=src.read_bytes())
        except OSError:
            return job

    def _compute(self, job: _FileJob) -> tuple[imageio.ImageData, Result]:
        self._local.jpeg = job.jpeg
        try:
            return self.enhance_data(job.data)
        finally:
            self._local.jpeg = None


def parse_denoise(value: str | float | None) -> str | float | None:
    """None, ``"auto"``, ``"off"`` or a level (sigma in 8-bit units, 0 to 75) as a float."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("auto", "off")):
        return value.strip().lower() if isinstance(value, str) else None
    try:
        return limits.parse_range(value, 0.0, MAX_DENOISE_LEVEL, "denoise")
    except UsageError as exc:
        raise UsageError(f"{exc}, or 'auto' or 'off'") from None


def describe(lm: LoadedModel) -> dict[str, Any]:
    return {
        "model": lm.spec.id,
        "provider": lm.provider,
        "precision": lm.precision,
        "rejected": list(lm.selection.rejected),
    }
