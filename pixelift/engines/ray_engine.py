"""A batch of files on a Ray cluster (``pixelift enhance SRC_DIR -o OUT_DIR --engine ray [--address ADDR]``).

Ray Data holds the list of files, one file per block; a pool of actors, each with a warm
:class:`~pixelift.runtime.enhancer.Enhancer` (sessions opened once, in the constructor), takes them one at a
time, and the worker that enhances a file writes its output (inputs and outputs are paths every node sees: a
shared or network file system). Each file goes through :func:`pixelift.runtime.stream.enhance_file`, exactly
what a local run calls, so outputs are bit-identical to a local run with the same options and tile size,
and large outputs are streamed on the workers too. (An auto tile is sized from the actor's share of its
node's memory, below a lone process's: pass a tile size, or ``PIXELIFT_TILE_MEMORY``, to match a local run
on images large enough to be tiled.)

Faults
    A file that fails (corrupt, unreadable, out of disk space) is reported in its :class:`FileOutcome` and the
    job goes on. A worker process that dies (killed, out of memory) is restarted by Ray and its file retried,
    up to ``retries`` times; past that the file is reported as lost and the job goes on (Ray Data's
    ``max_errored_blocks``). Outputs are written to a part file renamed into place, so a killed worker leaves
    no output; its part file is removed when the job ends.

Placement
    One actor per CPU slot (``cpus_per_worker`` CPUs each, pinned to their own cores where the node allows,
    so the models' threads do not fight), or one per GPU when the cluster has GPUs. The actors on a node
    split its tile memory (:func:`share_tile_memory`) rather than each sizing tiles from all of it.

:func:`enhance_files` is the API; it yields outcomes as files finish (not in input order).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixelift.errors import EngineError, MissingExtraError, PixeliftError, UsageError
from pixelift.paths import PART_PID_END, PART_SUFFIX
from pixelift.runtime.pipeline import FileOutcome

log = logging.getLogger(__name__)

#: environment variables a worker must see as the driver does (cache, limits, providers)
ENV_PREFIXES = ("PIXELIFT_",)


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run. ``address``: an existing cluster (``ray start --head`` prints it; ``auto``
    finds the local one); None starts Ray in this process. ``workers``: actor pool size (default: one per
    CPU slot or GPU of the cluster)."""

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0
    retries: int = 3  # times a file is retried after its worker died
    progress: bool = False  # Ray Data's progress bars on stderr
    runtime_env: dict[str, Any] = field(default_factory=dict)  # merged into the workers' runtime_env
    pin_choices: bool = True  # provider/precision "auto": the driver's choice for every worker (see pin_choices)

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1):
            raise UsageError(f"workers must be a whole number >= 1, not {self.workers!r}")
        if not self.cpus_per_worker > 0:
            raise UsageError(f"cpus_per_worker must be > 0, not {self.cpus_per_worker!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise UsageError(f"retries must be a whole number >= 0, not {self.retries!r}")


@dataclass(frozen=True)
class EnhanceSpec:
    """What every worker builds and runs: the Enhancer's keyword arguments (``auto``: an AutoEnhancer) and the
    per-file options of :func:`pixelift.runtime.stream.enhance_file`."""

    enhancer: dict[str, Any]
    auto: bool = False
    format: str | None = None
    quality: int = 95
    overwrite: bool = False
    stream: str = "auto"

    def build(self) -> Any:
        from pixelift.runtime.enhancer import AutoEnhancer, Enhancer

        return AutoEnhancer(**self.enhancer) if self.auto else Enhancer(**self.enhancer)


def pin_choices(spec: EnhanceSpec) -> EnhanceSpec:
    """``provider``/``precision`` ``"auto"`` resolved here, once, and given to every worker: each worker choosing
    for itself (on its own CPU slot, by its own micro-benchmark) may pick another provider, and another
    provider's numbers differ in the last bits; pinned, outputs are bit-identical to a local run. Kept ``auto``
    for the autopilot and for a chain whose models chose differently. A worker without the pinned provider
    falls back, loudly (or fails under ``strict``)."""
    enh = spec.build()  # validates every option
    opts = spec.enhancer
    if spec.auto or (opts.get("provider", "auto") != "auto" and opts.get("precision", "auto") != "auto"):
        return spec
    try:
        loaded = enh.loaded()
    except PixeliftError as exc:  # this machine cannot open the model (no artifact here): each worker chooses
        log.warning("provider/precision not pinned (%s); each worker chooses its own", exc)
        return spec
    providers = {lm.provider for lm in loaded}
    precisions = {lm.precision for lm in loaded}
    pinned = dict(opts)
    if opts.get("provider", "auto") == "auto" and len(providers) == 1:
        pinned["provider"] = providers.pop()
    if opts.get("precision", "auto") == "auto" and len(precisions) == 1:
        pinned["precision"] = precisions.pop()
        pinned["deep_precision"] = enh.deep_precision  # auto's rule for 16-bit and float images, kept
    return EnhanceSpec(pinned, spec.auto, spec.format, spec.quality, spec.overwrite, spec.stream)


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingExtraError(
            f"--engine ray needs Ray: pip install 'pixelift[ray]' ({exc}); on a cluster, on every node"
        ) from None
    return ray


class _Worker:
    """A Ray Data actor: one warm Enhancer, one file per call."""

    def __init__(self, spec: EnhanceSpec, cpus: float, pool: int = 1) -> None:
        share_tile_memory(cpus, pool)
        self._slot = _pin_cpus(cpus)
        self.spec = spec
        self.enh = spec.build()
        if not spec.auto:
            self.enh.loaded()  # open the sessions now: the first file should not pay for them

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        from pixelift.runtime import stream

        out: list[bytes] = []
        for src, dst in zip(batch["src"], batch["dst"], strict=True):
            t0 = time.perf_counter()
            s, d = Path(str(src)), Path(str(dst))
            try:
                path, res = stream.enhance_file(
                    self.enh,
                    s,
                    d,
                    format=self.spec.format,
                    quality=self.spec.quality,
                    overwrite=self.spec.overwrite,
                    stream=self.spec.stream,
                )
                outcome = FileOutcome(s, path, res, None, time.perf_counter() - t0)
            except Exception as exc:  # per file: the job goes on
                outcome = FileOutcome(s, d, None, exc, time.perf_counter() - t0)
            out.append(_dumps(outcome))
        return {"src": [str(x) for x in batch["src"]], "outcome": out}


def _dumps(outcome: FileOutcome) -> bytes:
    try:
        return pickle.dumps(outcome)
    except Exception:  # an exception that does not pickle: keep its words
        err = outcome.error
        return pickle.dumps(FileOutcome(outcome.src, outcome.output, None, EngineError(f"{type(err).__name__}: {err}"), outcome.seconds))


_SLOT_DIR = Path(tempfile.gettempdir())


def share_tile_memory(cpus: float, pool: int) -> int | None:
    """Set this actor's tile memory (``PIXELIFT_TILE_MEMORY``, unless it is set) to its share of the node's:
    the actors on one node enhance at once, and each sizing its tiles from all the free memory would
    overcommit it (the kernel then kills workers and Ray retries their files). Actors per node: at most the
    pool, and at most the node's cores over ``cpus``. Returns the budget set, or None."""
    from pixelift import limits
    from pixelift.runtime import footprint

    if os.environ.get(limits.ENV_TILE_MEMORY, "").strip():
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    sharers = max(1, min(pool, int(cores // cpus)))
    budget = footprint.tile_memory_budget(sharers=sharers)
    os.environ[limits.ENV_TILE_MEMORY] = str(budget)
    log.info("tile memory %d MB: one of %d actor(s) on this node", budget >> 20, sharers)
    return budget


def _pin_cpus(cpus: float) -> Any:
    """Pin this worker to its own ``cpus`` cores: claim the first free slot (a lock on a file in /tmp, let go
    when the process dies). Without a free slot, or a whole number of CPUs, nothing is pinned."""
    if not hasattr(os, "sched_setaffinity") or cpus != int(cpus) or cpus < 1:
        return None
    cores = sorted(os.sched_getaffinity(0))
    n = int(cpus)
    for i in range(len(cores) // n):
        path = _SLOT_DIR / f"pixelift-ray-cpu-slot-{os.getuid()}-{i}.lock"
        fh = path.open("a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            continue
        os.sched_setaffinity(0, cores[i * n : (i + 1) * n])
        return fh  # held for the life of the process
    return None


def _worker_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}


@contextlib.contextmanager
def _ray_session(ray: Any, options: RayOptions) -> Iterator[None]:
    """Connect to ``options.address`` or start a local Ray; shut down only what was started here."""
    if ray.is_initialized():
        yield
        return
    # Ray's own notices (token authentication on, progress bars off) are noise on a user's terminal;
    # with -v they are shown
    level = logging.WARNING if logging.getLogger("pixelift").isEnabledFor(logging.INFO) else logging.ERROR
    try:
        if options.address:
            ray.init(address=options.address, logging_level=level, log_to_driver=False)
        else:
            ray.init(logging_level=level, include_dashboard=False, log_to_driver=False)
    except Exception as exc:
        where = f"the Ray cluster at {options.address}" if options.address else "a local Ray"
        raise EngineError(f"cannot start or reach {where}: {type(exc).__name__}: {exc}") from None
    try:
        yield
    finally:
        ray.shutdown()


def pool_size(ray: Any, options: RayOptions) -> tuple[int, float, float]:
    """(actors, CPUs each, GPUs each) for the cluster as it is now."""
    res = ray.cluster_resources()
    gpus = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if res.get("GPU", 0) >= 1 else 0.0)
    if options.workers is not None:
        n = options.workers
    elif gpus > 0:
        n = max(1, int(res.get("GPU", 0) // gpus))
    else:
        n = max(1, int(res.get("CPU", 1) // options.cpus_per_worker))
    return n, options.cpus_per_worker, gpus


def enhance_files(
    spec: EnhanceSpec,
    jobs: Sequence[tuple[Path, Path]],
    options: RayOptions | None = None,
    *,
    on_pool: Callable[[int], None] | None = None,
) -> Iterator[FileOutcome]:
    """Enhance ``jobs`` (``(src, dst)`` pairs) on Ray; one :class:`FileOutcome` per job, as each finishes.

    Outputs that exist are the caller's business (``--skip-existing`` drops them before calling); with
    ``spec.overwrite`` False an existing output is an error for that file."""
    options = options or RayOptions()
    if not jobs:
        return
    spec = pin_choices(spec) if options.pin_choices else spec  # also validates every option, before Ray starts
    ray = _import_ray()
    with _ray_session(ray, options):
        n, cpus, gpus = pool_size(ray, options)
        n = min(n, len(jobs))
        if on_pool is not None:
            on_pool(n)
        if not options.progress:
            logging.getLogger("ray.data").setLevel(max(logging.WARNING, logging.getLogger("ray").level))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = options.progress
        ctx.max_errored_blocks = len(jobs)  # a file lost past its retries must not end the job
        ctx.execution_options.preserve_order = False
        runtime_env = {"env_vars": _worker_env()} | options.runtime_env
        if "env_vars" in options.runtime_env:
            runtime_env["env_vars"] = _worker_env() | options.runtime_env["env_vars"]
        with warnings.catch_warnings():
            # Ray 2.60 warns that extra actor options (retries) move elsewhere in 2.64; they still work here
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
            ds = ray.data.from_items(
                [{"src": str(s), "dst": str(d)} for s, d in jobs], override_num_blocks=len(jobs)
            ).map_batches(
                _Worker,
                fn_constructor_kwargs={"spec": spec, "cpus": cpus, "pool": n},
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=n),
                num_cpus=cpus,
                num_gpus=gpus,
                max_restarts=-1,
                max_task_retries=options.retries,
                runtime_env=runtime_env,
            )
        seen: set[str] = set()
        try:
            for row in ds.iter_rows():
                outcome = pickle.loads(row["outcome"])
                seen.add(str(row["src"]))
                yield outcome
        except Exception as exc:  # the job as a whole failed (the cluster went away)
            if os.environ.get("PIXELIFT_DEBUG"):
                raise
            lost: PixeliftError = EngineError(f"the Ray job stopped: {type(exc).__name__}: {str(exc)[:500]}")
        else:
            lost = EngineError(f"lost: its worker died {options.retries + 1} time(s) on it (Ray retried it)")
        finally:
            _sweep_parts([d for _, d in jobs])
        for s, d in jobs:
            if str(s) not in seen:
                yield FileOutcome(Path(s), Path(d), None, lost, 0.0)


def _sweep_parts(outputs: Sequence[Path]) -> None:
    """Remove the part files a killed worker left for these outputs (only theirs, only pixelift's)."""
    by_folder: dict[Path, set[str]] = {}
    for d in outputs:
        by_folder.setdefault(Path(d).parent, set()).add(Path(d).name)
    for folder, names in by_folder.items():
        try:
            parts = list(folder.glob(f".*{PART_PID_END}*{PART_SUFFIX}"))
        except OSError:
            continue
        for p in parts:
            stem = p.name[1:].rsplit(PART_PID_END, 1)[0].rsplit(".", 1)[0]
            if stem in names:
                with contextlib.suppress(OSError):
                    p.unlink()


__all__ = ["EnhanceSpec", "RayOptions", "enhance_files", "pin_choices", "pool_size"]
