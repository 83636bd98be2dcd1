"""The ``onnx-fp32`` target (and its SE-sync variant): PyTorch -> ONNX, checked against
the original implementation and published only when every parity check passes."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixelift.artifacts import ONNX_FP32, SE_TARGET, Artifact, find, locked, publish
from pixelift.errors import DamagedArtifactError, ExportError
from pixelift.export import parity
from pixelift.export.parity import run_torch, runtime_available
from pixelift.models import get as get_spec
from pixelift.models.sources import NcnnPackageSource, PackageFileSource
from pixelift.models.spec import ModelSpec
from pixelift.paths import sha256_file

log = logging.getLogger(__name__)


def source_fingerprint(spec: ModelSpec) -> list[dict[str, Any]]:
    out = []
    for src in spec.sources:
        files = src.files()
        entry: dict[str, Any] = {
            "source": src.describe(),
            "files": [{"name": f.name, "sha256": sha256_file(f), "size": f.stat().st_size} for f in files],
        }
        if isinstance(src, NcnnPackageSource | PackageFileSource):
            entry["package_version"] = src.version()
        out.append(entry)
    return out


def parity_checks(
    spec: ModelSpec, module: Any, onnx_path: Path, *, threshold_db: float = parity.PARITY_DB
) -> list[parity.Check]:
    """The parity report: torch vs the ncnn original; ONNX on onnxruntime and OpenVINO (f32) vs torch."""
    from pixelift.models.importers import original

    image, x = parity.parity_input(spec)
    ref = run_torch(module, x)
    checks: list[parity.Check] = []
    got = original(spec, x)
    if got is not None:
        name, out = got
        checks.append(parity.compare(name, out, "torch", ref, image, threshold_db))
    checks.append(
        parity.compare("torch", ref, "onnxruntime-cpu", parity.run_artifact(onnx_path, x, "cpu"), image, threshold_db)
    )
    if runtime_available("openvino"):
        ov_out = parity.run_artifact(onnx_path, x, "openvino", {"precision": "f32"})
        checks.append(parity.compare("torch", ref, "openvino-cpu-f32", ov_out, image, threshold_db))
    return checks


def _publish_verified(
    spec: ModelSpec,
    target: str,
    onnx_path: Path,
    checks: list[parity.Check],
    threshold_db: float,
    sources: list[dict[str, Any]],
    extra: dict[str, Any],
    t0: float,
    files: dict[str, Path] | None = None,
) -> Artifact:
    """Refuse a failed parity report (nothing is written), else publish with the full manifest."""
    from pixelift.export.onnx_export import tool_versions

    rep = parity.report(checks)
    if not rep["passed"]:
        failed = "; ".join(f"{c.candidate} vs {c.reference}: {c.psnr_db} dB" for c in checks if not c.passed)
        raise ExportError(f"{spec.id}: {target} parity below {threshold_db} dB ({failed}); no artifact written")
    manifest = {
        "format": "onnx",
        "precision": "fp32",
        "file": "model.onnx",
        "spec": spec.to_dict(),
        "sources": sources,
        "tools": tool_versions(),
        **extra,
        "parity": rep,
        "export_seconds": round(time.perf_counter() - t0, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return publish(spec.id, target, onnx_path, manifest, extra=files)


def to_onnx(
    spec: ModelSpec | str,
    *,
    force: bool = False,
    simplify: bool = True,
    threshold_db: float = parity.PARITY_DB,
) -> Artifact:
    """Export a model to a verified fp32 ONNX artifact in the cache, or return the cached one.

    The cached artifact is reused only if its source hashes still match. A failed
    parity check raises :class:`ExportError` and leaves no artifact behind.
    """
    return _export_locked(ONNX_FP32, _to_onnx, spec, force, simplify, threshold_db)


def _export_locked(
    target: str,
    build: Callable[[ModelSpec, bool, bool, float], Artifact],
    spec: ModelSpec | str,
    force: bool,
    simplify: bool,
    threshold_db: float,
) -> Artifact:
    spec = get_spec(spec) if isinstance(spec, str) else spec
    with locked(spec.id, target):  # a second process waits here and reuses the first one's result
        return build(spec, force, simplify, threshold_db)


def _intact(cached: Artifact | None) -> Artifact | None:
    if cached is None:
        return None
    try:
        cached.verify()
    except DamagedArtifactError as exc:  # damaged: rebuilt
        log.warning("%s: rebuilding: %s", cached.model_id, exc)
        return None
    return cached


def _to_onnx(spec: ModelSpec, force: bool, simplify: bool, threshold_db: float) -> Artifact:
    from pixelift.export import se_sync
    from pixelift.export.onnx_export import export_module
    from pixelift.models.importers import build_torch, export_form, form_name

    sources = source_fingerprint(spec)
    cached = find(spec.id, ONNX_FP32)
    fresh = (
        cached
        and cached.manifest.get("sources") == sources
        and "se_blocks" in cached.manifest
        and cached.manifest.get("form") == form_name(spec)
    )
    if cached and fresh and not force and cached.parity_passed and _intact(cached):
        log.info("%s: using cached artifact %s", spec.id, cached.path)
        return cached
    t0 = time.perf_counter()
    module, form = export_form(spec, build_torch(spec))
    if form != form_name(spec):
        log.warning("%s: exported as the module itself (its layers are not those %s expects)", spec.id, form_name(spec))
    with tempfile.TemporaryDirectory(prefix="pixelift-export-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        facts = export_module(module, spec, onnx_path, simplify=simplify)
        checks = parity_checks(spec, module, onnx_path, threshold_db=threshold_db)
        # SE blocks the SE-sync variant (to_onnx_se) can sync across tiles; [] if none
        extra = {**facts, "se_blocks": se_sync.geometry_or_empty(module, spec.alignment), "form": form}
        return _publish_verified(spec, ONNX_FP32, onnx_path, checks, threshold_db, sources, extra, t0)


def to_onnx_se(
    spec: ModelSpec | str,
    *,
    force: bool = False,
    simplify: bool = True,
    threshold_db: float = parity.PARITY_DB,
) -> Artifact:
    """Export the SE-sync variant (target ``onnx-fp32-se``) of a model with SE blocks.

    The graph and why it is a separate artifact: :mod:`pixelift.export.se_sync`. Only
    the tiled runtime uses it (:mod:`pixelift.runtime.se_sync`). Cached like
    :func:`to_onnx`; raises :class:`ExportError` when the model has no syncable SE block
    or a parity check fails.
    """
    return _export_locked(SE_TARGET, _to_onnx_se, spec, force, simplify, threshold_db)


def _to_onnx_se(spec: ModelSpec, force: bool, simplify: bool, threshold_db: float) -> Artifact:
    from pixelift.export import se_sync
    from pixelift.export.onnx_export import export_module
    from pixelift.models.importers import build_torch

    sources = source_fingerprint(spec)
    cached = find(spec.id, SE_TARGET)
    complete = cached and len(cached.manifest.extra_files) == len(cached.manifest.se_blocks)
    fresh = complete and cached is not None and cached.manifest.get("sources") == sources and cached.parity_passed
    if cached and fresh and not force and _intact(cached):
        return cached
    t0 = time.perf_counter()
    module = build_torch(spec)
    try:
        wrapped = se_sync.wrap(module, spec.alignment)
    except ValueError as exc:
        raise ExportError(f"{spec.id}: no SE-sync variant: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="pixelift-export-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        facts = export_module(wrapped, spec, onnx_path, simplify=simplify, io=se_sync.export_io(wrapped))
        stats = {}
        for k in range(len(wrapped.blocks)):
            stats[se_sync.stats_file(k)] = Path(tmp) / se_sync.stats_file(k)
            graph = se_sync.SEStats(wrapped, k)
            export_module(graph, spec, stats[se_sync.stats_file(k)], simplify=simplify, io=se_sync.export_io(graph))
        checks = se_sync.parity_checks(spec, module, onnx_path, stats, wrapped.geometry, threshold_db)
        extra = {**facts, "se_blocks": wrapped.geometry}
        return _publish_verified(spec, SE_TARGET, onnx_path, checks, threshold_db, sources, extra, t0, files=stats)
