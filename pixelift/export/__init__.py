"""Export stage: PyTorch -> verified ONNX artifacts in the cache.

Needs the ``export`` extra (torch, spandrel, onnx, onnxslim).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pixelift.errors import ExportError
from pixelift.export import parity
from pixelift.export.artifacts import (
    SE_TARGET,
    Artifact,
    artifact_dir,
    exported_targets,
    find,
    publish,
)
from pixelift.models import get as get_spec
from pixelift.models.sources import NcnnPackageSource
from pixelift.models.spec import ModelSpec
from pixelift.paths import sha256_file

log = logging.getLogger(__name__)

ONNX_FP32 = "onnx-fp32"


def source_fingerprint(spec: ModelSpec) -> list[dict[str, Any]]:
    out = []
    for src in spec.sources:
        files = src.files()
        entry: dict[str, Any] = {
            "source": src.describe(),
            "files": [{"name": f.name, "sha256": sha256_file(f), "size": f.stat().st_size} for f in files],
        }
        if isinstance(src, NcnnPackageSource):
            entry["package_version"] = src.version()
        out.append(entry)
    return out


def _torch_run(module: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _available(name: str) -> bool:
    from pixelift.providers import get_provider, read_machine

    return get_provider(name).probe(read_machine()).available


def parity_checks(
    spec: ModelSpec, module: Any, onnx_path: Path, *, threshold_db: float = parity.PARITY_DB
) -> list[parity.Check]:
    """The parity report: torch vs the ncnn original; ONNX on onnxruntime and OpenVINO (f32) vs torch."""
    image, x = parity.parity_input(spec)
    ref = _torch_run(module, x)
    checks: list[parity.Check] = []
    ncnn_src = next((s for s in spec.sources if isinstance(s, NcnnPackageSource)), None)
    if ncnn_src is not None:
        from pixelift.models import oracle

        param, binf = ncnn_src.files()
        original = oracle.reference(spec, x[0], param, binf)[None]
        checks.append(parity.compare("ncnn-original", original, "torch", ref, image, threshold_db))
    checks.append(
        parity.compare("torch", ref, "onnxruntime-cpu", parity.run_artifact(onnx_path, x, "cpu"), image, threshold_db)
    )
    if _available("openvino"):
        ov_out = parity.run_artifact(onnx_path, x, "openvino", precision="f32")
        checks.append(parity.compare("torch", ref, "openvino-cpu-f32", ov_out, image, threshold_db))
    return checks


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
    from pixelift.export import se_sync
    from pixelift.export.onnx_export import export_module, tool_versions
    from pixelift.models.importers import build_torch

    spec = get_spec(spec) if isinstance(spec, str) else spec
    sources = source_fingerprint(spec)
    cached = find(spec.id, ONNX_FP32)
    fresh = cached and cached.manifest.get("sources") == sources and "se_blocks" in cached.manifest
    if cached and fresh and not force and cached.parity_passed:
        cached.verify()
        log.info("%s: using cached artifact %s", spec.id, cached.path)
        return cached
    t0 = time.perf_counter()
    module = build_torch(spec)
    with tempfile.TemporaryDirectory(prefix="pixelift-export-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        facts = export_module(module, spec, onnx_path, simplify=simplify)
        checks = parity_checks(spec, module, onnx_path, threshold_db=threshold_db)
        rep = parity.report(checks)
        if not rep["passed"]:
            failed = "; ".join(f"{c.candidate} vs {c.reference}: {c.psnr_db} dB" for c in checks if not c.passed)
            raise ExportError(f"{spec.id}: parity below {threshold_db} dB ({failed}); no artifact written")
        manifest = {
            "model_id": spec.id,
            "target": ONNX_FP32,
            "format": "onnx",
            "precision": "fp32",
            "file": "model.onnx",
            "spec": spec.to_dict(),
            "sources": sources,
            "tools": tool_versions(),
            **facts,
            "parity": rep,
            # SE blocks the SE-sync variant (to_onnx_se) can sync across tiles; [] if none
            "se_blocks": se_sync.geometry_or_empty(module, spec.alignment),
            "export_seconds": round(time.perf_counter() - t0, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return publish(spec.id, ONNX_FP32, onnx_path, manifest)


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
    from pixelift.export import se_sync
    from pixelift.export.onnx_export import export_module, tool_versions
    from pixelift.models.importers import build_torch

    spec = get_spec(spec) if isinstance(spec, str) else spec
    sources = source_fingerprint(spec)
    cached = find(spec.id, SE_TARGET)
    complete = cached and len(cached.manifest.get("extra_files", {})) == len(cached.manifest.get("se_blocks", []))
    if cached and complete and not force and cached.manifest.get("sources") == sources and cached.parity_passed:
        cached.verify()
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
        rep = parity.report(checks)
        if not rep["passed"]:
            failed = "; ".join(f"{c.candidate} vs {c.reference}: {c.psnr_db} dB" for c in checks if not c.passed)
            raise ExportError(f"{spec.id}: SE-sync parity below {threshold_db} dB ({failed}); no artifact written")
        manifest = {
            "model_id": spec.id,
            "target": SE_TARGET,
            "format": "onnx",
            "precision": "fp32",
            "file": "model.onnx",
            "spec": spec.to_dict(),
            "sources": sources,
            "tools": tool_versions(),
            **facts,
            "se_blocks": wrapped.geometry,
            "parity": rep,
            "export_seconds": round(time.perf_counter() - t0, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return publish(spec.id, SE_TARGET, onnx_path, manifest, extra=stats)


__all__ = [
    "ONNX_FP32",
    "SE_TARGET",
    "Artifact",
    "artifact_dir",
    "exported_targets",
    "find",
    "parity_checks",
    "to_onnx",
    "to_onnx_se",
]
