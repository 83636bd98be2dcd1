"""What a pipeline takes and gives, apart from the pipeline itself: the tile options, the tiler's arguments,
the result of one image or file, and :class:`Pipeline`, what the streamed file path
(:mod:`pixelift.runtime.stream`) asks of an :class:`~pixelift.runtime.enhancer.Enhancer`: it depends on this
interface, not on the Enhancer, which calls it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict

from pixelift import limits
from pixelift.errors import UsageError
from pixelift.models.spec import ModelSpec
from pixelift.runtime import tiling
from pixelift.runtime.session import LoadedModel

Progress = tiling.Progress
MIN_TILE = 16  # smaller tiles are all overlap
MAX_OVERLAP = 256
MAX_BATCH = 64


class TilingArgs(TypedDict):
    """Keyword arguments of :func:`pixelift.runtime.tiling.run_tiled` and its streamed twin."""

    scale: int
    overlap: int
    alignment: int
    blend: tiling.Blend
    batch: int
    progress: Progress | None


@dataclass(frozen=True)
class TileOptions:
    tile: int | str | None = "auto"  # pixels, None for whole image, "auto" from memory
    overlap: int | None = None  # context pixels per side; None: the architecture's measured one
    blend: tiling.Blend = tiling.DEFAULT_BLEND
    batch: int = 1
    # SE models (tile_safe=False with SE blocks): compute the whole image's SE means before a
    # tiled run, so tiles match the untiled result (runtime.se_sync; ~3x the time of tiling alone)
    sync_se: bool = True
    #: bytes the "auto" tile may spend on activations (an int, or a size such as "2G"); None:
    #: ``PIXELIFT_TILE_MEMORY``, else a share of the memory available
    memory: int | str | None = None

    def __post_init__(self) -> None:
        if self.memory is not None:
            object.__setattr__(self, "memory", limits.parse_bytes(self.memory, "tile memory"))
        t = self.tile
        if not (t is None or t == "auto" or (isinstance(t, int) and not isinstance(t, bool) and t >= MIN_TILE)):
            raise UsageError(f"tile must be a size >= {MIN_TILE} px, 'auto' or None, not {t!r}")
        ov = self.overlap
        if ov is not None and (not isinstance(ov, int) or isinstance(ov, bool) or not 0 <= ov <= MAX_OVERLAP):
            raise UsageError(f"overlap must be a whole number of pixels from 0 to {MAX_OVERLAP}, not {self.overlap!r}")
        if not isinstance(self.batch, int) or isinstance(self.batch, bool) or not 1 <= self.batch <= MAX_BATCH:
            raise UsageError(f"batch must be a whole number from 1 to {MAX_BATCH}, not {self.batch!r}")
        try:
            object.__setattr__(self, "blend", tiling.Blend(self.blend))
        except ValueError:
            choices = ", ".join(b.value for b in tiling.Blend)
            raise UsageError(f"blend must be one of {choices}, not {self.blend!r}") from None


@dataclass
class Result:
    """What happened to one image: which models and providers ran, and any notes."""

    models: list[str]
    providers: list[str]
    rejected: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # model -> (provider, why)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: the autopilot's analysis and chosen steps (AutoEnhancer only)
    autopilot: dict[str, Any] | None = None
    #: what loading the models said of them (a provider passed over, a precision it lacks), as logged then
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FileOutcome:
    """What became of one file of :meth:`Enhancer.enhance_files`: its output, or its error."""

    src: Path
    output: Path | None
    result: Result | None
    error: Exception | None
    seconds: float


class Pipeline(Protocol):
    """What :mod:`pixelift.runtime.stream` reads of an Enhancer (see its attributes and methods there)."""

    specs: list[ModelSpec]
    tiles: TileOptions
    outscale: float | None
    max_pixels: int | None
    max_output_pixels: int | None
    max_stream_pixels: int | None
    warnings: tuple[str, ...]

    @property
    def scale(self) -> float: ...

    @property
    def whole_image_reason(self) -> str | None:
        """Why this pipeline needs the whole image before it knows what to run, or None."""
        ...

    def loaded(self, deep: bool = False) -> list[LoadedModel]: ...

    def depth_note(self, loaded: list[LoadedModel], deep: bool) -> str | None: ...

    def output_size(self, height: int, width: int) -> tuple[int, int]: ...

    def overlap_for(self, spec: ModelSpec) -> int: ...

    def tiling_args(self, spec: ModelSpec) -> TilingArgs: ...

    def tile_for(self, lm: LoadedModel, h: int, w: int) -> int | None: ...

    def enhance_file_in_memory(
        self,
        src: str | Path,
        dst: str | Path | None = None,
        *,
        format: str | None = None,
        quality: int = 95,
        overwrite: bool = False,
    ) -> tuple[Path, Result]: ...


__all__ = [
    "MAX_BATCH",
    "MAX_OVERLAP",
    "MIN_TILE",
    "FileOutcome",
    "Pipeline",
    "Progress",
    "Result",
    "TileOptions",
    "TilingArgs",
]
