"""Artifacts to sessions, cached by (artifact hash, provider request, options). Torch-free."""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pixelift.errors import PixeliftError
from pixelift.export.artifacts import SE_TARGET, Artifact, find
from pixelift.models.spec import ModelSpec
from pixelift.providers import PROVIDERS, ProviderError, Request, Selection, open_session, read_machine
from pixelift.providers.microbench import faster_cpu_backend

log = logging.getLogger(__name__)

ONNX_FP32 = "onnx-fp32"


class ArtifactMissingError(PixeliftError):
    """The model has no exported artifact and this install cannot export one."""


@dataclass(frozen=True)
class LoadedModel:
    spec: ModelSpec
    artifact: Artifact
    selection: Selection
    precision: str = "fp32"  # compute precision actually run (pixelift.precision)

    @property
    def provider(self) -> str:
        return self.selection.provider


# target -> the export function that builds it (pixelift.export; needs torch)
EXPORTERS = {ONNX_FP32: "to_onnx", SE_TARGET: "to_onnx_se"}


def resolve_artifact(model_id: str, target: str = ONNX_FP32, *, auto_export: bool = True) -> Artifact:
    """The verified ``target`` artifact of ``model_id``; exported first when torch is installed."""
    art = find(model_id, target)
    if art is None:
        if not auto_export or importlib.util.find_spec("torch") is None:
            raise ArtifactMissingError(
                f"{model_id} has no {target} artifact yet; run `pixelift export {model_id}` "
                "(needs the export extra: pip install 'pixelift[export]')"
            )
        import pixelift.export

        log.warning("%s: exporting %s now (one time)", model_id, target)
        art = getattr(pixelift.export, EXPORTERS[target])(model_id)
    art.verify()
    return art


_CACHE: dict[tuple[str, str, bool, str], Selection] = {}
_LOCK = threading.RLock()
_PCACHE: dict[tuple[str, str, bool, str], LoadedModel] = {}


def probe_input(spec: ModelSpec) -> np.ndarray:
    """A small aligned tile for the first-run check and the CPU micro-benchmark."""
    side = spec.alignment * max(1, 64 // spec.alignment)
    return np.full((1, 3, side, side), 0.5, np.float32)


def load(
    model_id: str, request: Request, *, auto_export: bool = True, precision: str = "fp32", fast: bool = False
) -> LoadedModel:
    if precision != "fp32":
        return _load_precision(model_id, request, precision, fast, auto_export)
    art = resolve_artifact(model_id, auto_export=auto_export)
    spec = ModelSpec.from_dict(art.manifest["spec"])
    key = (art.manifest["sha256"], request.provider, request.strict, json.dumps(request.options, sort_keys=True))
    x = probe_input(spec)

    def rank_cpu() -> tuple[list[str], str]:
        def opener(name: str):  # type: ignore[no-untyped-def]
            return PROVIDERS[name].open(art.path, **request.options)

        choice = faster_cpu_backend(art.path, art.manifest["sha256"], read_machine().fingerprint(), x, opener)
        loser = [n for n in ("openvino", "cpu") if n != choice.winner]
        return [choice.winner, *loser], choice.reason()

    with _LOCK:
        sel = _CACHE.get(key)
        if sel is None:
            sel = open_session(art.path, request, probe_input=x, scale=spec.scale, cpu_ranker=rank_cpu)
            _CACHE[key] = sel
    return LoadedModel(spec, art, sel)


def _accelerator_available(request: Request) -> bool:
    from pixelift.providers import probe_all

    probes = probe_all()
    ov = probes.get("openvino")
    return any(p.accelerator and probes[n].available for n, p in PROVIDERS.items()) or bool(
        ov and ov.available and any(d in ov.devices for d in ("GPU", "NPU"))
    )


def _load_precision(model_id: str, request: Request, precision: str, fast: bool, auto_export: bool) -> LoadedModel:
    """Open ``precision`` (or ``auto``) through the capability table (:mod:`pixelift.precision`)."""
    from pixelift import precision as P

    if precision not in P.CHOICES:
        raise PixeliftError(f"precision must be one of {', '.join(P.CHOICES)}")
    fp32 = resolve_artifact(model_id, auto_export=auto_export)
    spec = ModelSpec.from_dict(fp32.manifest["spec"])
    name, _, device = request.provider.partition(":")
    if device or (request.provider == "auto" and _accelerator_available(request)):
        # accelerators: the fp32 path and its provider ranking (fidelity is measured on CPU backends)
        log.info(
            "%s: precision %s -> fp32 on %s (measured precisions cover CPU backends)",
            model_id,
            precision,
            request.provider,
        )
        return load(model_id, request, auto_export=auto_export)
    providers = P.CPU_PROVIDERS if request.provider == "auto" else (name,)
    gate = P.gate_db(fast)
    key = (
        fp32.manifest["sha256"],
        f"{request.provider}|{precision}|{gate}",
        request.strict,
        json.dumps(request.options, sort_keys=True),
    )
    with _LOCK:
        hit = _PCACHE.get(key)
        if hit is not None:
            return hit
        wanted = P.PRECISIONS if precision == "auto" else ("fp32", precision)
        records = P.measure_model(model_id, providers=providers, precisions=wanted)
        rows = [m for m in P.measured_rows(records) if precision == "auto" or m.capability.precision == precision]
        if spec.half_safe is False:
            rows = [m for m in rows if m.capability.precision != "fp16"]
        passed: list[tuple[str, str]] = []
        if precision == "auto":
            best, passed = P.choose_auto(rows, gate)
            # the fastest row that meets the gate first, then the other rows that meet it
            order = [best, *sorted((m for m in rows if m is not best and m.meets(gate)), key=lambda m: m.seconds)]
        else:
            if not rows:
                msg = f"{model_id}: no {precision} artifact runnable on {', '.join(providers)}"
                hint = " (run: pixelift export --precision " + precision + f" {model_id})"
                if request.strict:
                    raise PixeliftError(msg + hint)
                log.warning("%s%s; using fp32", msg, hint)
                return load(model_id, request, auto_export=auto_export)
            order = sorted(rows, key=lambda m: (not m.finite, m.seconds))
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
            fallback = load(model_id, request, auto_export=auto_export)
            sel = fallback.selection
            lm = replace(fallback, selection=replace(sel, rejected=(*passed, *sel.rejected)))
        _PCACHE[key] = lm
    return lm


def _open_first_row(
    model_id: str, spec: ModelSpec, order: list[Any], request: Request, gate: float, passed: list[tuple[str, str]]
) -> LoadedModel | None:
    """Open the rows in ``order``, each on its own provider and artifact (an OpenVINO IR cannot
    fall back to onnxruntime); a failure is recorded in ``passed`` or, when strict, raised."""
    for m in order:
        cap = m.capability
        art = find(model_id, cap.target)
        if art is None:
            passed.append((f"{cap.key}@{cap.target}", "artifact missing"))
            continue
        art.verify()
        why = (
            f"precision {cap.precision} ({m.psnr_db if cap.precision != 'fp32' else 'reference'} dB, "
            f"{m.seconds * 1000:.1f} ms/crop, gate {gate} dB) @{cap.target}"
        )
        sub = Request(provider=cap.provider, strict=True, options={**request.options, **cap.options})
        try:
            sel = open_session(art.path, sub, probe_input=probe_input(spec), scale=spec.scale)
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
