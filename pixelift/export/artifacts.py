"""The artifact cache: one folder per (model, target), holding the file and its manifest.

Layout: ``$PIXELIFT_HOME/artifacts/<model-id>/<target>/{model.onnx, manifest.json}``.
A folder is built beside its final place and renamed into it, so a reader never sees a
half-written artifact.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelift.errors import ExportError
from pixelift.paths import artifacts_dir, sha256_file

MANIFEST = "manifest.json"
#: The SE-sync variant of a model with SE blocks (pixelift.export.se_sync), for tiled runs.
SE_TARGET = "onnx-fp32-se"
SCHEMA = 1


@dataclass(frozen=True)
class Artifact:
    model_id: str
    target: str
    path: Path
    manifest: dict[str, Any]

    @property
    def parity_passed(self) -> bool:
        return bool(self.manifest.get("parity", {}).get("passed"))

    def verify(self) -> None:
        """Re-hash the file (and any extra files) against its manifest; raise if one was altered."""
        if sha256_file(self.path) != self.manifest["sha256"]:
            raise ExportError(f"{self.path}: sha256 does not match its manifest; re-export it")
        for name, facts in self.manifest.get("extra_files", {}).items():
            if sha256_file(self.file(name)) != facts["sha256"]:
                raise ExportError(f"{self.file(name)}: sha256 does not match its manifest; re-export it")

    def file(self, name: str) -> Path:
        """A file of the artifact beside the main one (``extra_files`` in the manifest)."""
        return self.path.with_name(name)


def artifact_dir(model_id: str, target: str) -> Path:
    return artifacts_dir() / model_id / target


def find(model_id: str, target: str) -> Artifact | None:
    d = artifact_dir(model_id, target)
    mf = d / MANIFEST
    if not mf.is_file():
        return None
    manifest = json.loads(mf.read_text())
    return Artifact(model_id, target, d / manifest["file"], manifest)


def exported_targets(model_id: str) -> list[str]:
    d = artifacts_dir() / model_id
    return sorted(p.name for p in d.iterdir() if (p / MANIFEST).is_file()) if d.is_dir() else []


def publish(
    model_id: str, target: str, built_file: Path, manifest: dict[str, Any], extra: dict[str, Path] | None = None
) -> Artifact:
    """Move a finished file (and ``extra`` files, by name) and its manifest into the cache atomically."""
    final = artifact_dir(model_id, target)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target}.", dir=final.parent))
    try:
        dest_file = staging / manifest["file"]
        shutil.move(str(built_file), dest_file)
        extra_files = {}
        for name, path in (extra or {}).items():
            shutil.move(str(path), staging / name)
            extra_files[name] = {"sha256": sha256_file(staging / name), "size_bytes": (staging / name).stat().st_size}
        manifest = {
            **manifest,
            **({"extra_files": extra_files} if extra_files else {}),
            "schema": SCHEMA,
            "sha256": sha256_file(dest_file),
            "size_bytes": dest_file.stat().st_size,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        old = None
        if final.exists():
            old = final.with_name(f".{target}.old-{staging.name}")
            final.rename(old)
        staging.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Artifact(model_id, target, final / manifest["file"], manifest)
