"""Model specifications: what a model is, independent of any runtime."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from pixelift.ids import validate_id
from pixelift.models.sources import WeightSource, source_from_dict

S = TypeVar("S", bound=WeightSource)


class Task(enum.StrEnum):
    UPSCALE = "upscale"
    DENOISE = "denoise"
    DEJPEG = "dejpeg"
    RESTORE = "restore"


@dataclass(frozen=True)
class ModelSpec:
    """One model in the registry.

    The model contract shared by every importer and every exported artifact:
    input is float32 NCHW RGB in ``input_range``; output is RGB in the same range,
    ``scale`` times larger. Inputs must have H and W divisible by ``alignment``
    (the runtime pads for it). ``border`` is the context, in input pixels per side,
    that the original network consumes; our module reflect-pads for it internally.
    ``channels`` 1: the network sees one channel (its graph averages RGB); the runtime runs it on
    each colour channel of a colour image, so colour is kept.
    """

    id: str
    task: Task
    scale: int
    architecture: str
    params: int
    purpose: str
    content: str  # photo / anime / art / general
    license: str
    license_source: str
    sources: tuple[WeightSource, ...]
    noise_level: int | None = None
    input_range: tuple[float, float] = (0.0, 1.0)
    normalisation: str = "none: RGB in 0..1, any mean/scale is inside the graph"
    alignment: int = 1
    border: int = 0
    tile_safe: bool = True
    half_safe: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    channels: int = 3

    def __post_init__(self) -> None:
        validate_id(self.id)
        if self.scale < 1 or self.alignment < 1 or self.border < 0:
            raise ValueError(f"{self.id}: scale/alignment must be >= 1 and border >= 0")
        if not self.sources:
            raise ValueError(f"{self.id}: a model needs at least one weight source")

    def source(self, kind: type[S]) -> S | None:
        """The first weight source of type ``kind`` (e.g. the ncnn original), or None."""
        return next((s for s in self.sources if isinstance(s, kind)), None)

    @property
    def min_side(self) -> int:
        """The smallest input side the graph runs: its internal reflect pad needs more pixels than
        ``border`` (a smaller image, or tile, is padded up to this by the runtime)."""
        return -(-(self.border + 1) // self.alignment) * self.alignment

    @property
    def source_kinds(self) -> frozenset[str]:
        return frozenset(s.kind for s in self.sources)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["task"] = self.task.value
        d["input_range"] = list(self.input_range)
        d["sources"] = [s.to_dict() for s in self.sources]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        d = dict(d)
        d["task"] = Task(d["task"])
        d["input_range"] = tuple(d["input_range"])
        d["sources"] = tuple(source_from_dict(s) for s in d["sources"])
        return cls(**d)
