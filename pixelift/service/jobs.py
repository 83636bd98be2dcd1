"""Jobs: typed specs parsed from JSON, a queue served by worker threads, warm Enhancers.

A job is a list of (input, output) files run by one :class:`~pixelift.runtime.enhancer.Enhancer`
configuration. Workers take jobs in order; a job goes on whether or not a client watches it.
Cancelling stops at the next tile (the progress callback raises) and removes the output of the
file that was running; written files are atomic (``paths.atomic_path``), so no partial output is
ever visible under its final name.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixelift import limits, logs
from pixelift.errors import PixeliftError, UsageError
from pixelift.service.state import Journal

log = logging.getLogger(__name__)

FORMATS = ("png", "tiff", "jpeg", "webp")
AUTO = "auto"


class RequestError(PixeliftError):
    """A request the service refuses: carries the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Cancelled(Exception):
    """Raised from the progress callback to stop a file mid-run."""


class Status(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # every file written
    FAILED = "failed"  # at least one file failed
    CANCELLED = "cancelled"


class FileStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    CANCELLED = "cancelled"


TERMINAL = (Status.DONE, Status.FAILED, Status.CANCELLED)


# --- parsing -----------------------------------------------------------------------------


def _field(body: dict[str, Any], key: str, kinds: tuple[type, ...], default: Any) -> Any:
    value = body.get(key)
    if value is None:  # absent or null: the default
        return default
    if isinstance(value, bool) and bool not in kinds:
        raise RequestError(400, f"{key!r} must be {' or '.join(k.__name__ for k in kinds)}, not a boolean")
    if not isinstance(value, kinds):
        raise RequestError(400, f"{key!r} must be {' or '.join(k.__name__ for k in kinds)}, not {type(value).__name__}")
    return value


def _pixels(body: dict[str, Any], key: str, default: int) -> int | None:
    """A pixel limit: a whole number, or "none" for no limit (UsageError on anything else)."""
    value = _field(body, key, (int, str), None)
    return default if value is None else limits.parse_pixels(value, key)


def _absolute(value: object, what: str) -> Path:
    if not isinstance(value, str) or not value or "\0" in value:
        raise RequestError(400, f"{what} must be a non-empty path string")
    path = Path(value)
    if not path.is_absolute():
        raise RequestError(400, f"{what} {value!r} is not an absolute path; the service resolves no relative paths")
    return path


@dataclass(frozen=True)
class EnhancerConfig:
    """Everything that builds an Enhancer: the key of the warm cache."""

    models: tuple[str, ...] = ()  # empty: the default model
    auto: bool = False  # the autopilot chooses the models
    scale: float | None = None
    precision: str = "auto"
    provider: str = "auto"
    strict: bool = False
    fast: bool = False
    denoise: str | float | None = None
    denoise_strength: float = 1.0
    tile: int | str | None = "auto"
    overlap: int | None = None  # None: the runtime's default
    blend: str | None = None
    batch: int = 1
    tile_memory: int | None = None  # the client's PIXELIFT_TILE_MEMORY; None: the service's own
    # the client's limits (its options or environment); the defaults defer to the service's environment
    max_pixels: int | None = limits.DEFAULT_MAX_PIXELS
    max_output_pixels: int | None = limits.DEFAULT_MAX_OUTPUT_PIXELS
    max_stream_pixels: int | None = limits.DEFAULT_MAX_STREAM_PIXELS

    def build(self, progress: Callable[[int, int], None]) -> Any:
        from pixelift import models
        from pixelift.runtime.enhancer import AutoEnhancer, Enhancer

        common: dict[str, Any] = dict(
            provider=self.provider,
            strict=self.strict,
            precision=self.precision,
            fast=self.fast,
            tiles=self.tiles(),
            denoise_strength=self.denoise_strength,
            max_pixels=self.max_pixels,
            max_output_pixels=self.max_output_pixels,
            max_stream_pixels=self.max_stream_pixels,
            progress=progress,
        )
        if self.auto:
            return AutoEnhancer(outscale=2.0 if self.scale is None else self.scale, **common)
        return Enhancer(list(self.models) or models.DEFAULT_MODEL, outscale=self.scale, denoise=self.denoise, **common)


    def tiles(self) -> Any:
        from pixelift.runtime import tiling
        from pixelift.runtime.enhancer import TileOptions

        return TileOptions(
            tile=self.tile,
            overlap=self.overlap,  # None: each architecture's measured overlap
            blend=self.blend or tiling.DEFAULT_BLEND,  # type: ignore[arg-type]  # TileOptions validates
            batch=self.batch,
            memory=self.tile_memory,
        )


@dataclass(frozen=True)
class JobSpec:
    config: EnhancerConfig
    inputs: tuple[Path, ...]
    outputs: tuple[Path, ...]
    format: str | None = None
    quality: int = 95
    overwrite: bool = False
    stream: str = "auto"  # as `enhance --stream`: auto streams outputs of 100 MP or more

    @classmethod
    def parse(cls, body: object) -> JobSpec:
        """Validate a submitted job; every refusal is a :class:`RequestError` (400) with a reason."""
        from pixelift.runtime import imageio
        from pixelift.runtime.imageio import default_output_path
        from pixelift.runtime.stream import STREAM_MODES

        if not isinstance(body, dict):
            raise RequestError(400, "the job must be a JSON object")
        known = {"inputs", "output", "outputs", "model", "scale", "precision", "provider", "strict", "fast",
                 "denoise", "denoise_strength", "tile", "overlap", "blend", "batch", "format", "quality", "overwrite",
                 "max_pixels", "max_output_pixels", "max_stream_pixels", "stream", "tile_memory"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise RequestError(400, f"unknown field(s) {', '.join(unknown)}; the job takes {', '.join(sorted(known))}")
        raw_inputs = body.get("inputs")
        if isinstance(raw_inputs, str):
            raw_inputs = [raw_inputs]
        if not isinstance(raw_inputs, list) or not raw_inputs:
            raise RequestError(400, "'inputs' must be a non-empty list of absolute paths")
        if len(raw_inputs) > MAX_FILES:
            raise RequestError(400, f"a job takes at most {MAX_FILES} files, not {len(raw_inputs)}")
        inputs = tuple(_absolute(p, "input") for p in raw_inputs)
        fmt = _field(body, "format", (str,), None)
        if fmt is not None and fmt.lower() not in FORMATS:
            raise RequestError(400, f"'format' must be one of {', '.join(FORMATS)}, not {fmt!r}")
        fmt = None if fmt is None else fmt.upper()
        quality = _field(body, "quality", (int,), 95)
        if not 1 <= quality <= 100:
            raise RequestError(400, f"'quality' must be 1 to 100, not {quality}")
        stream = _field(body, "stream", (str,), "auto")
        if stream not in STREAM_MODES:
            raise RequestError(400, f"'stream' must be one of {', '.join(STREAM_MODES)}, not {stream!r}")

        def out_format(src: Path) -> str:
            return fmt or imageio.default_output_format(imageio.format_for_path(src) or "PNG")

        if body.get("outputs") is not None and body.get("output") is not None:
            raise RequestError(400, "the job names both 'output' and 'outputs'; give one of them")
        if body.get("outputs") is not None:
            raw_outputs = body["outputs"]
            if not isinstance(raw_outputs, list) or len(raw_outputs) != len(inputs):
                raise RequestError(400, "'outputs' must be a list of absolute paths, one per input")
            outputs = tuple(_absolute(p, "output") for p in raw_outputs)
        elif body.get("output") is not None:
            out = _absolute(body["output"], "output")
            raw = str(body["output"])
            folder = raw.endswith(("/", os.sep)) or out.is_dir() or (len(inputs) > 1 and not out.suffix)
            if not folder and len(inputs) > 1:
                raise RequestError(400, "with several inputs, 'output' must be a folder (end it with a separator)")
            outputs = (
                tuple(out / f"{src.stem}{imageio.suffix_for(out_format(src))}" for src in inputs) if folder else (out,)
            )
        else:
            outputs = tuple(default_output_path(src, out_format(src)) for src in inputs)
        for out in outputs:
            if imageio.format_for_path(out) not in imageio.WRITE_FORMATS:
                raise RequestError(400, f"{out}: pixelift writes {', '.join(imageio.WRITE_FORMATS)}; use one of their suffixes")
        resolved_inputs = {_resolve(p) for p in inputs}
        seen: set[Path] = set()
        for out in outputs:
            r = _resolve(out)
            if r in resolved_inputs:
                raise RequestError(400, f"output {out} is one of the inputs; the service never overwrites an input")
            if r in seen:
                raise RequestError(400, f"two inputs would be written to {out}; name the outputs ('outputs')")
            seen.add(r)
        return cls(
            config=_parse_config(body),
            inputs=inputs,
            outputs=outputs,
            format=fmt,
            quality=quality,
            overwrite=bool(_field(body, "overwrite", (bool,), False)),
            stream=stream,
        )


MAX_FILES = 10_000


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise RequestError(400, f"{path}: not a usable path ({exc})") from None


def _tile_memory(body: dict[str, Any]) -> int | None:
    raw = _field(body, "tile_memory", (int,), None)
    return None if raw is None else limits.parse_bytes(raw, "'tile_memory'")


def _parse_config(body: dict[str, Any]) -> EnhancerConfig:
    from pixelift import models
    from pixelift.precision import CHOICES
    from pixelift.providers import validate_provider
    from pixelift.runtime.enhancer import parse_denoise

    model = body.get("model")
    names = [model] if isinstance(model, str) else model
    if names is not None and (not isinstance(names, list) or not all(isinstance(m, str) for m in names)):
        raise RequestError(400, "'model' must be a model id, a list of ids (a chain), or 'auto'")
    names = names or []
    auto = names == [AUTO]
    try:
        for m in [] if auto else names:
            models.get(m)
        scale = _field(body, "scale", (int, float), None)
        precision = _field(body, "precision", (str,), "auto")
        if precision not in CHOICES:
            raise RequestError(400, f"'precision' must be one of {', '.join(CHOICES)}, not {precision!r}")
        tile = _field(body, "tile", (int, str), "auto")
        return EnhancerConfig(
            models=() if auto else tuple(names),
            auto=auto,
            scale=None if scale is None else limits.parse_scale(scale, "scale"),
            precision=precision,
            provider=validate_provider(_field(body, "provider", (str,), "auto")),
            strict=bool(_field(body, "strict", (bool,), False)),
            fast=bool(_field(body, "fast", (bool,), False)),
            denoise=parse_denoise(_field(body, "denoise", (str, int, float), None)),
            denoise_strength=limits.parse_range(_field(body, "denoise_strength", (int, float), 1.0), 0.0, 2.0, "denoise_strength"),
            tile=None if tile == "none" else tile,
            overlap=_field(body, "overlap", (int,), None),
            blend=_field(body, "blend", (str,), None),
            batch=_field(body, "batch", (int,), 1),
            tile_memory=_tile_memory(body),
            max_pixels=_pixels(body, "max_pixels", limits.DEFAULT_MAX_PIXELS),
            max_output_pixels=_pixels(body, "max_output_pixels", limits.DEFAULT_MAX_OUTPUT_PIXELS),
            max_stream_pixels=_pixels(body, "max_stream_pixels", limits.DEFAULT_MAX_STREAM_PIXELS),
        )
    except RequestError:
        raise
    except PixeliftError as exc:  # unknown model, bad provider or value
        raise RequestError(400, str(exc)) from None


# --- jobs ---------------------------------------------------------------------------------


@dataclass
class FileState:
    input: str
    output: str
    status: FileStatus = FileStatus.PENDING
    tiles_done: int = 0
    tiles_total: int = 0
    error: str | None = None
    seconds: float | None = None
    models: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # what an in-process run reports too: providers passed over (model -> (provider, why)), what
    # loading the models warned of, the autopilot's analysis and steps
    provider_rejected: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    autopilot: dict[str, Any] | None = None
    #: one-time events while it ran (a model built or measured on its first run), as they happen
    events: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "status": self.status.value,
            "tiles_done": self.tiles_done,
            "tiles_total": self.tiles_total,
            "error": self.error,
            "seconds": self.seconds,
            "models": self.models,
            "providers": self.providers,
            "notes": self.notes,
            "provider_rejected": self.provider_rejected,
            "warnings": self.warnings,
            "autopilot": self.autopilot,
            "events": self.events,
        }


@dataclass
class Job:
    spec: JobSpec
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    status: Status = Status.QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    version: int = 0  # bumped on every change (the event stream sends each)
    cancel: threading.Event = field(default_factory=threading.Event)
    files: list[FileState] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.files:
            self.files = [FileState(str(i), str(o)) for i, o in zip(self.spec.inputs, self.spec.outputs, strict=True)]

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        finished = [f for f in self.files if f.status not in (FileStatus.PENDING, FileStatus.RUNNING)]
        return {
            "id": self.id,
            "status": self.status.value,
            "files_done": len(finished),
            "files_total": len(self.files),
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "version": self.version,
            "files": [f.to_dict() for f in self.files],
        }


class ProgressRouter:
    """One progress callback for every cached Enhancer, routed to the job file that the calling
    worker thread runs (an Enhancer may serve two jobs at once on two workers)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self, done: int, total: int) -> None:
        callback = getattr(self._local, "callback", None)
        if callback is not None:
            callback(done, total)

    @contextlib.contextmanager
    def route(self, callback: Callable[[int, int], None]) -> Iterator[None]:
        self._local.callback = callback
        try:
            yield
        finally:
            self._local.callback = None


class EnhancerCache:
    """Warm Enhancers by configuration, least recently used first out: past ``max_entries``, or
    while free memory is under ``min_free_bytes`` (then the runtime's session cache is dropped
    too, so only the sessions of the Enhancers kept stay referenced)."""

    def __init__(self, router: ProgressRouter, max_entries: int = 4, min_free_bytes: int = 1 << 30) -> None:
        self.router = router
        self.max_entries = max(1, max_entries)
        self.min_free_bytes = min_free_bytes
        self._entries: collections.OrderedDict[EnhancerConfig, Any] = collections.OrderedDict()
        self._in_use: collections.Counter[EnhancerConfig] = collections.Counter()
        self._lock = threading.Lock()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def validate(self, config: EnhancerConfig) -> None:
        """Build (without opening anything) to refuse bad combinations at submit time."""
        try:
            config.build(self.router)
        except PixeliftError as exc:
            raise RequestError(400, str(exc)) from None

    @contextlib.contextmanager
    def lease(self, config: EnhancerConfig) -> Iterator[Any]:
        with self._lock:
            enh = self._entries.get(config)
            if enh is None:
                enh = self._entries[config] = config.build(self.router)
            self._entries.move_to_end(config)
            self._in_use[config] += 1
        try:
            yield enh
        finally:
            with self._lock:
                self._in_use[config] -= 1
                if self._in_use[config] <= 0:
                    del self._in_use[config]
                self._relieve()

    def _memory_short(self) -> bool:
        from pixelift.runtime import tiling

        free = tiling.available_memory_bytes()
        return free is not None and free < self.min_free_bytes

    def _relieve(self) -> None:
        evicted = False
        for config in list(self._entries):
            if len(self._entries) <= self.max_entries and not self._memory_short():
                break
            if self._in_use[config]:
                continue
            del self._entries[config]
            self.evictions += 1
            evicted = True
            log.info("evicted a warm enhancer (%s)", ",".join(config.models) or ("auto" if config.auto else "default"))
        if evicted:
            from pixelift.runtime import session

            session.clear_cache()


class JobQueue:
    """Jobs in submission order, run by ``concurrency`` worker threads. Finished jobs are kept
    (for status queries) up to ``keep_finished``, oldest dropped first."""

    def __init__(
        self,
        cache: EnhancerCache,
        journal: Journal | None = None,
        *,
        concurrency: int = 1,
        max_queued: int = 1000,
        keep_finished: int = 500,
        on_change: Callable[[Job], None] | None = None,
    ) -> None:
        self.cache = cache
        self.journal = journal
        self.max_queued = max_queued
        self.keep_finished = keep_finished
        self.on_change = on_change
        self.jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._pending: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.last_activity = time.monotonic()
        self._workers = [
            threading.Thread(target=self._work, name=f"pixelift-worker-{i}", daemon=True) for i in range(max(1, concurrency))
        ]
        for t in self._workers:
            t.start()

    # --- client side ---

    def submit(self, spec: JobSpec) -> Job:
        self.cache.validate(spec.config)
        job = Job(spec)
        with self._cond:
            if self._closed:
                raise RequestError(503, "the service is shutting down; submit to a new one")
            if len(self._pending) >= self.max_queued:
                raise RequestError(503, f"the queue is full ({self.max_queued} jobs waiting); retry later")
            self.jobs[job.id] = job
            self._pending.append(job)
            self._forget_old()
            self.last_activity = time.monotonic()
            self._cond.notify()
        self._changed(job)
        return job

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise RequestError(404, f"no job {job_id!r} (finished jobs are kept for the last {self.keep_finished})")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self._cond:
            job.cancel.set()
            if job.status is Status.QUEUED:
                self._pending.remove(job)
                self._finish(job, Status.CANCELLED)
        if job.terminal:
            self._changed(job)
        return job

    def listing(self) -> list[dict[str, str]]:
        with self._cond:
            return [{"id": j.id, "status": j.status.value} for j in self.jobs.values()]

    def counts(self) -> dict[str, int]:
        with self._cond:
            running = sum(1 for j in self.jobs.values() if j.status is Status.RUNNING)
            return {"queued": len(self._pending), "running": running, "known": len(self.jobs)}

    def busy(self) -> bool:
        c = self.counts()
        return bool(c["queued"] or c["running"])

    def close(self, timeout: float = 30.0) -> None:
        """Cancel everything and stop the workers (each stops at its next tile)."""
        with self._cond:
            self._closed = True
            for job in list(self.jobs.values()):
                job.cancel.set()
            while self._pending:
                self._finish(self._pending.popleft(), Status.CANCELLED)
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))

    # --- worker side ---

    def _changed(self, job: Job) -> None:
        job.version += 1
        if self.on_change is not None:
            self.on_change(job)

    def _finish(self, job: Job, status: Status) -> None:
        job.status = status
        job.finished = time.time()
        for f in job.files:
            if f.status in (FileStatus.PENDING, FileStatus.RUNNING):
                f.status = FileStatus.CANCELLED
        self.last_activity = time.monotonic()

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.terminal]
        for job in finished[: max(0, len(finished) - self.keep_finished)]:
            del self.jobs[job.id]

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed and not self._pending:
                    return
                job = self._pending.popleft()
                job.status = Status.RUNNING
                job.started = time.time()
            self._changed(job)
            try:
                self._run(job)
            except Exception as exc:  # a bug must not kill the worker: the job fails with a message
                message = str(exc) if isinstance(exc, PixeliftError) else f"internal error: {type(exc).__name__}: {exc}"
                log.warning("job %s: %s", job.id, message)
                log.debug("traceback", exc_info=True)
                for f in job.files:
                    if f.status in (FileStatus.PENDING, FileStatus.RUNNING):
                        f.status, f.error = FileStatus.ERROR, message
            with self._cond:
                if job.cancel.is_set():
                    status = Status.CANCELLED
                elif any(f.status is FileStatus.ERROR for f in job.files):
                    status = Status.FAILED
                else:
                    status = Status.DONE
                self._finish(job, status)
                self._forget_old()
            self._changed(job)

    def _run(self, job: Job) -> None:
        spec = job.spec
        with self.cache.lease(spec.config) as enh:
            for f, src, dst in zip(job.files, spec.inputs, spec.outputs, strict=True):
                if job.cancel.is_set():
                    return
                f.status = FileStatus.RUNNING
                self._changed(job)
                t0 = time.perf_counter()
                try:
                    self._run_file(job, f, enh, src, dst)
                    f.status = FileStatus.DONE
                except Cancelled:
                    f.status = FileStatus.CANCELLED
                except (PixeliftError, OSError, ValueError, RuntimeError) as exc:
                    f.status, f.error = FileStatus.ERROR, str(exc)
                except Exception as exc:
                    log.warning("job %s: internal error on %s: %s: %s", job.id, src, type(exc).__name__, exc)
                    log.debug("traceback", exc_info=True)
                    f.status, f.error = FileStatus.ERROR, f"internal error: {type(exc).__name__}: {exc}"
                f.seconds = round(time.perf_counter() - t0, 3)
                self._changed(job)

    def _run_file(self, job: Job, f: FileState, enh: Any, src: Path, dst: Path) -> None:
        spec = job.spec
        if not src.is_file():
            raise UsageError(f"{src}: input not found (or not a file)")
        if dst.exists() and not spec.overwrite:
            raise UsageError(f"{dst} exists; pass \"overwrite\": true (--overwrite) to replace it")
        if self.journal is not None:
            self.journal.add(dst.parent)

        def progress(done: int, total: int) -> None:
            if job.cancel.is_set():
                raise Cancelled
            f.tiles_done, f.tiles_total = done, total
            self._changed(job)

        def said(event: str) -> None:
            f.events.append(event)
            self._changed(job)

        with self.cache.router.route(progress), logs.events(said):
            path, res = enh.enhance_file(
                src, dst, format=spec.format, quality=spec.quality, overwrite=spec.overwrite, stream=spec.stream
            )
        if job.cancel.is_set():  # cancelled after the last tile: the file is not wanted
            Path(path).unlink(missing_ok=True)
            raise Cancelled
        f.output, f.models, f.providers, f.notes = str(path), list(res.models), list(res.providers), list(res.notes)
        f.provider_rejected, f.warnings, f.autopilot = dict(res.rejected), list(res.warnings), res.autopilot
