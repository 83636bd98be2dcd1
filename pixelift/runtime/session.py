"""Artifacts to sessions, cached by (artifact hash, provider request, options). Torch-free."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pixelift.artifacts import ONNX_FP32, TARGETS, Artifact, Builder, find, resolve_artifact
from pixelift.errors import ArtifactMissingError, PixeliftError, UsageError
from pixelift.models.architectures import pack
from pixelift.models.spec import ModelSpec
from pixelift.providers import (
    PROVIDERS,
    ProviderError,
    Request,
    Role,
    Selection,
    cpu_backends,
    open_session,
    opening,
    opens,
    probe_all,
    provider_options,
    read_machine,
    requested_unavailable,
)
from pixelift.providers.microbench import faster_cpu_backend
from pixelift.runtime import footprint

if TYPE_CHECKING:
    from pixelift.precision import Measured

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    spec: ModelSpec
    artifact: Artifact
    selection: Selection
    precision: str = "fp32"  # compute precision actually run (pixelift.precision)

    @property
    def provider(self) -> str:
        return self.selection.provider


_CACHE: dict[tuple[str, str, bool, str], Selection] = {}
_LOCK = threading.RLock()
_PCACHE: dict[tuple[str, str, bool, str], LoadedModel] = {}
_PASSED: dict[tuple[str, str, bool, str], str] = {}  # own-artifact accelerators that could not run a model


def probe_input(spec: ModelSpec) -> np.ndarray:
    """A small aligned tile for the first-run check and the CPU micro-benchmark."""
    side = spec.alignment * max(1, 64 // spec.alignment)
    return pack(spec.architecture, np.full((1, 3, side, side), 0.5, np.float32))


def manifest_spec(art: Artifact) -> ModelSpec:
    """The spec an artifact was exported with (what a bundle carries to a machine without the model's
    importer). A field added since comes from the built-in registry: ``channels`` (artifacts made before
    it said nothing of a one-channel network)."""
    from pixelift import models

    raw = dict(art.manifest.spec)
    if "channels" not in raw and raw.get("id") in models.REGISTRY:
        raw["channels"] = models.REGISTRY.get(raw["id"]).channels
    return ModelSpec.from_dict(raw)


def load(
    model_id: str,
    request: Request,
    *,
    auto_export: bool = True,
    precision: str = "fp32",
    fast: bool = False,
    builder: Builder | None = None,
) -> LoadedModel:
    if precision != "fp32" or not _opens_onnx(request):
        return _load_precision(model_id, request, precision, fast, auto_export, builder)
    art = resolve_artifact(model_id, ONNX_FP32, builder=builder, auto_build=auto_export)
    spec = manifest_spec(art)
    on_device, passed = _own_devices(request, precision, _Job(model_id, art, spec, auto_export, builder))
    if on_device is not None:
        return on_device
    return _passed_over(_load_onnx_fp32(art, spec, request), passed)


def _load_onnx_fp32(art: Artifact, spec: ModelSpec, request: Request) -> LoadedModel:
    """The fp32 ONNX on the best provider that opens it (accelerators, then the faster CPU backend)."""
    key = (art.sha256, request.provider, request.strict, repr(request.options))
    x = probe_input(spec)

    def rank_cpu() -> tuple[list[str], str]:
        def opener(name: str):  # type: ignore[no-untyped-def]
            return PROVIDERS[name].open(art.path, provider_options(name, base=request.options))

        contenders = opening(".onnx", cpu_backends())
        choice = faster_cpu_backend(art.path, art.sha256, read_machine().fingerprint(), x, opener, contenders)
        loser = [n for n in contenders if n != choice.winner]
        return [choice.winner, *loser], choice.reason()

    with _LOCK:
        sel = _CACHE.get(key)
        if sel is None:
            sel = open_session(art.path, request, probe_input=x, scale=spec.scale, cpu_ranker=rank_cpu)
            _CACHE[key] = sel
    return LoadedModel(spec, art, sel)


def _opens_onnx(request: Request) -> bool:
    """Whether the provider a request names (any, for ``auto``) opens the fp32 ONNX artifact;
    one that runs only its own artifacts (ncnn) is reached through the capability table."""
    name = request.provider.partition(":")[0]
    return request.provider == "auto" or name not in PROVIDERS or opens(name, ".onnx")


def _fp32_fallback(
    model_id: str, request: Request, why: str, auto_export: bool, builder: Builder | None
) -> LoadedModel:
    """The fp32 path; a requested provider that cannot open the fp32 ONNX (and has no row of
    its own that ran) gives way to automatic selection, recorded, or raises when strict."""
    if _opens_onnx(request):
        return load(model_id, request, auto_export=auto_export, builder=builder)
    if request.strict:
        raise ProviderError(f"provider {request.provider} (strict): {why}")
    why = why.removeprefix(f"{model_id}: ")
    log.warning("provider %s cannot run %s (%s); falling back to automatic selection", request.provider, model_id, why)
    lm = load(model_id, replace(request, provider="auto"), auto_export=auto_export, builder=builder)
    sel = lm.selection
    return replace(lm, selection=replace(sel, rejected=((request.provider, why), *sel.rejected)))


def _build_companions(
    fp32: Artifact, spec: ModelSpec, providers: tuple[str, ...], auto_export: bool, builder: Builder | None
) -> None:
    """Targets made straight from the model's own weight files (the ncnn original: a copy and a
    parity check, no conversion) are built on first use where a provider here runs them. A model
    the builder refuses (SE blocks, a failed parity check) is not tried again until its fp32
    artifact changes."""
    from pixelift import precision as P

    model_id = fp32.model_id
    for name, target in TARGETS.items():
        if target.from_source not in spec.source_kinds or P.refusal(fp32, name) or find(model_id, name) is not None:
            continue
        if not any(c.target == name and c.provider in providers and P.runnable(c) for c in P.CAPABILITIES):
            continue
        if not auto_export:
            log.info("%s: no %s artifact (auto export is off); its rows are not measured", model_id, name)
            continue
        try:
            resolve_artifact(model_id, name, builder=builder, auto_build=True)
        except ArtifactMissingError as exc:  # this install cannot build (no export extra)
            log.info("%s: %s", model_id, exc)
        except PixeliftError as exc:
            log.warning("%s: no %s artifact (%s); its rows are not measured", model_id, name, exc)
            P.record_refusal(fp32, name, str(exc))


def photo_weight(spec: ModelSpec, rows: Iterable[Measured]) -> Callable[[Measured], float]:
    """What ``auto`` scales a row's time per crop by: the tiling its backend's footprint implies on
    a camera photo (ncnn's ESRGAN tiles are less than half the side of OpenVINO's)."""
    overhead = {
        (p, q): footprint.reference_overhead(spec, p, precision=q)
        for p, q in {(m.capability.provider, m.capability.precision) for m in rows}
    }
    return lambda m: round(overhead[m.capability.provider, m.capability.precision], 2)


def _accelerators(onnx: bool) -> list[str]:
    """Labels of the accelerators present here, in table order: those that open the fp32 ONNX
    (``onnx``), or those that run only their own artifacts (ncnn:GPU)."""
    probes = probe_all()
    out: list[str] = []
    for n, p in PROVIDERS.items():
        if not probes[n].available or opens(n, ".onnx") != onnx:
            continue
        if p.role == Role.ACCELERATOR:
            out.append(n)
        out.extend(f"{n}:{d}" for d in p.accelerator_devices if d in probes[n].devices)
    return out


@dataclass(frozen=True)
class _Job:
    """A model being loaded: its fp32 artifact and spec, and how missing artifacts are built."""

    model_id: str
    fp32: Artifact
    spec: ModelSpec
    auto_export: bool
    builder: Builder | None


def _accelerator_available(request: Request) -> bool:
    return bool(_accelerators(onnx=True))


def _own_devices(request: Request, precision: str, job: _Job) -> tuple[LoadedModel | None, list[tuple[str, str]]]:
    """For ``auto`` with no accelerator that opens the ONNX: the accelerators that run only their
    own artifact (ncnn:GPU), which rank before the CPU backends. The first that runs the model
    at ``precision`` (auto: fp32, see :func:`_load_on_device`), else None and why each was
    passed over (a model without an ncnn original, bf16 on a GPU, a device that failed)."""
    passed: list[tuple[str, str]] = []
    if request.provider != "auto" or _accelerator_available(request):
        return None, passed
    for label in _accelerators(onnx=False):
        key = (job.fp32.sha256, f"{label}|{precision}", request.strict, repr(request.options))
        with _LOCK:
            hit = _PCACHE.get(key)
            if hit is not None:
                return hit, passed
            if key in _PASSED:  # said once per process
                passed.append((label, _PASSED[key]))
                continue
            try:
                sub = replace(request, provider=label, strict=True)
                lm = _PCACHE[key] = _load_on_device(sub, precision, job)
                return lm, passed
            except PixeliftError as exc:
                # warned once per model and device (the fp32 path after a failed row asks again)
                said = any(k[0] == key[0] and k[1].partition("|")[0] == label for k in _PASSED)
                (log.info if said else log.warning)(
                    "%s: provider %s passed over (%s); the CPU backends decide", job.model_id, label, exc
                )
                passed.append((label, _PASSED.setdefault(key, str(exc))))
    return None, passed


def _passed_over(lm: LoadedModel, passed: list[tuple[str, str]]) -> LoadedModel:
    return replace(lm, selection=replace(lm.selection, rejected=(*passed, *lm.selection.rejected))) if passed else lm


def _load_precision(
    model_id: str,
    request: Request,
    precision: str,
    fast: bool,
    auto_export: bool,
    builder: Builder | None,
    *,
    own_devices: bool = True,
) -> LoadedModel:
    """Open ``precision`` (or ``auto``) through the capability table (:mod:`pixelift.precision`);
    ``own_devices=False``: without trying the accelerators that run only their own artifacts."""
    from pixelift import precision as P

    if precision not in P.CHOICES:
        raise UsageError(f"precision must be one of {', '.join(P.CHOICES)}")
    fp32 = resolve_artifact(model_id, ONNX_FP32, builder=builder, auto_build=auto_export)
    spec = manifest_spec(fp32)
    missing = requested_unavailable(request, probe_all())  # strict: raises
    if missing is not None:
        label, why = missing
        auto = _load_precision(model_id, replace(request, provider="auto"), precision, fast, auto_export, builder)
        return replace(auto, selection=replace(auto.selection, rejected=((label, why), *auto.selection.rejected)))

    def fp32_load(why: str = "no row of its own ran") -> LoadedModel:
        if precision != "fp32" and not _opens_onnx(request):  # the provider asked for, at fp32
            return _load_precision(model_id, request, "fp32", False, auto_export, builder)
        return _fp32_fallback(model_id, request, why, auto_export, builder)

    name, _, device = request.provider.partition(":")
    if device and not _opens_onnx(request):  # ncnn:GPU: its own artifact, on that device
        return _load_on_device(request, precision, _Job(model_id, fp32, spec, auto_export, builder))
    if own_devices:
        on_device, gpu_passed = _own_devices(request, precision, _Job(model_id, fp32, spec, auto_export, builder))
        if on_device is not None:
            return on_device
        if gpu_passed:
            cpu = _load_precision(model_id, request, precision, fast, auto_export, builder, own_devices=False)
            return _passed_over(cpu, gpu_passed)
    if device or (request.provider == "auto" and _accelerator_available(request)):
        # accelerators: the fp32 path and its provider ranking (fidelity is measured on CPU backends)
        log.info(
            "%s: precision %s -> fp32 on %s (measured precisions cover CPU backends)",
            model_id,
            precision,
            request.provider,
        )
        return fp32_load()
    providers = P.CPU_PROVIDERS if request.provider == "auto" else (name,)
    gate = P.gate_db(fast)
    key = (
        fp32.sha256,
        f"{request.provider}|{precision}|{gate}",
        request.strict,
        repr(request.options),
    )
    with _LOCK:
        hit = _PCACHE.get(key)
        if hit is not None:
            return hit
        wanted = P.PRECISIONS if precision == "auto" else ("fp32", precision)
        _build_companions(fp32, spec, providers, auto_export, builder)
        records = P.measure_model(model_id, providers=providers, precisions=wanted)
        rows = [m for m in P.measured_rows(records) if precision == "auto" or m.capability.precision == precision]
        if spec.half_safe is False:
            rows = [m for m in rows if m.capability.precision != "fp16"]
        passed: list[tuple[str, str]] = []
        per_photo = photo_weight(spec, rows)
        if precision == "auto":
            if not any(m.meets(gate) for m in rows):
                # nothing measured on these providers (none could run a row): the fp32 path decides, and
                # says so where it has to fall back; auto meeting no gate is fp32 by definition
                log.info("%s: no measured precision row on %s; running fp32", model_id, ", ".join(providers))
                return fp32_load(f"no measured row of {model_id} on {', '.join(providers)}")
            best, passed = P.choose_auto(rows, gate, per_photo)
            if fast and not any(m.capability.precision == "int8" for m in rows):
                # a warning where an int8 artifact could be had (an export away); else what is, said with -v
                able = any(c.provider in providers for c in P.rows(precision="int8"))
                log.log(
                    logging.WARNING if able else logging.INFO,
                    "%s: --fast found no int8 artifact (%s); running %s meanwhile",
                    model_id,
                    P.missing_hint("int8", providers, model_id),
                    best.capability.key,
                )
            # the fastest row that meets the gate first, then the other rows that meet it
            order = [
                best,
                *sorted((m for m in rows if m is not best and m.meets(gate)), key=lambda m: m.seconds * per_photo(m)),
            ]
        else:
            if not rows:
                msg = f"{model_id}: no {precision} artifact runnable on {', '.join(providers)}"
                hint = P.missing_hint(precision, providers, model_id)
                if request.strict:
                    raise ProviderError(f"{msg} ({hint})")
                if precision != "fp32" or _opens_onnx(request):  # else the fallback below says why
                    log.warning("%s (%s); using fp32", msg, hint)
                return fp32_load(hint)
            order = sorted(rows, key=lambda m: (not m.finite, m.seconds * per_photo(m)))
            if not order[0].meets(gate):
                log.warning(
                    "%s: %s on %s measured %s dB vs fp32 on held-out images, below the %s dB gate",
                    model_id,
                    precision,
                    order[0].capability.provider,
                    order[0].psnr_db,
                    gate,
                )
        lm = _open_first_row(model_id, spec, order, request, gate, passed)
        if lm is None:  # every row failed to open or to run: the fp32 path, with its own ranking
            fallback = fp32_load()
            sel = fallback.selection
            lm = replace(fallback, selection=replace(sel, rejected=(*passed, *sel.rejected)))
        _PCACHE[key] = lm
    return lm


def _load_on_device(request: Request, precision: str, job: _Job) -> LoadedModel:
    """A device of a provider that runs only its own artifacts (``ncnn:GPU``): the provider's row
    of ``precision`` with the device added to its options, else its fp32 row, said (strict: raised).
    ``auto`` is fp32 there: fidelity rows are measured on CPU backends, not on this device."""
    from pixelift import precision as P

    model_id, fp32, spec = job.model_id, job.fp32, job.spec
    name, _, device = request.provider.partition(":")
    _build_companions(fp32, spec, (name,), job.auto_export, job.builder)
    asked = "fp32" if precision == "auto" else precision
    passed: list[tuple[str, str]] = []
    for cap in [*P.rows(name, asked), *(P.rows(name, "fp32") if asked != "fp32" else [])]:
        art = find(model_id, cap.target)
        if art is None:
            why = P.refusal(fp32, cap.target) or f"no {cap.target} artifact"
            passed.append((f"{request.provider}:{cap.precision}@{cap.target}", why))
            continue
        try:
            opts = provider_options(name, {**cap.options, "device": device}, base=request.options)
            sub = Request(provider=request.provider, strict=True, options=opts)
            sel = open_session(art.path, sub, probe_input=probe_input(spec), scale=spec.scale)
        except PixeliftError as exc:  # an option the device refuses (bf16 storage), a failed open or first run
            if request.strict:
                raise ProviderError(f"provider {request.provider} (strict) at {cap.precision}: {exc}") from exc
            log.warning("%s: %s at %s failed (%s)", model_id, request.provider, cap.precision, exc)
            passed.append((f"{request.provider}:{cap.precision}@{cap.target}", str(exc)))
            continue
        if cap.precision != asked:
            msg = f"{model_id}: {request.provider} has no {asked} row that ran here; running {cap.precision}"
            if request.strict:
                raise ProviderError(f"provider {request.provider} (strict): {msg}")
            log.warning("%s", msg)
        why = f"precision {cap.precision} on {request.provider} @{cap.target}"
        return LoadedModel(spec, art, replace(sel, rejected=(*passed, *sel.rejected), why=why), cap.precision)
    why = "; ".join(f"{k}: {w}" for k, w in passed) or f"{name} has no row here"
    return _fp32_fallback(model_id, request, why, job.auto_export, job.builder)


def _open_first_row(
    model_id: str, spec: ModelSpec, order: list[Any], request: Request, gate: float, passed: list[tuple[str, str]]
) -> LoadedModel | None:
    """Open the rows in ``order``, each on its own provider and artifact (an OpenVINO IR cannot
    fall back to onnxruntime); a failure is recorded in ``passed`` or, when strict, raised."""
    for m in order:
        cap = m.capability
        try:
            art = resolve_artifact(model_id, cap.target, auto_build=False)
        except ArtifactMissingError as exc:
            passed.append((f"{cap.key}@{cap.target}", str(exc)))
            continue
        why = (
            f"precision {cap.precision} ({m.psnr_db if cap.precision != 'fp32' else 'reference'} dB, "
            f"{m.seconds * 1000:.1f} ms/crop, gate {gate} dB) @{cap.target}"
        )
        opts = provider_options(cap.provider, cap.options, base=request.options)
        sub = Request(provider=cap.provider, strict=True, options=opts)
        try:
            sel = open_session(art.path, sub, probe_input=probe_input(spec), scale=spec.scale, reason=f"measured: {why}")
        except ProviderError as exc:
            if request.strict:
                raise
            log.warning("%s: %s@%s failed (%s); trying the next row", model_id, cap.key, cap.target, exc)
            passed.append((f"{cap.key}@{cap.target}", str(exc)))
            continue
        sel = Selection(sel.provider, sel.options, sel.session, (*passed, *sel.rejected), why)
        log.info("%s: %s on %s", model_id, why, sel.provider)
        return LoadedModel(spec, art, sel, cap.precision)
    return None


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
        _PCACHE.clear()
        _PASSED.clear()
