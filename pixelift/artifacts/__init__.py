"""The artifact layer: store, typed manifest, target table, builder injection. Torch-free.

Runtime and export both stand on it; neither the runtime nor this layer imports
:mod:`pixelift.export` (the export stage registers a :class:`Builder`).
"""

from __future__ import annotations

from pixelift.artifacts.builders import Builder, installed_builder, resolve_artifact
from pixelift.artifacts.manifest import MANIFEST, SCHEMA, FidelityRecord, FileRecord, Manifest, ParityReport
from pixelift.artifacts.store import (
    Artifact,
    artifact_dir,
    artifact_lock,
    exported_targets,
    find,
    inspect,
    locked,
    publish,
    remove,
    sha256_tree,
    update_manifest,
)
from pixelift.artifacts.targets import ONNX_FP32, SE_TARGET, TARGETS, Format, Target, get_target

__all__ = [
    "MANIFEST",
    "ONNX_FP32",
    "SCHEMA",
    "SE_TARGET",
    "TARGETS",
    "Artifact",
    "Builder",
    "FidelityRecord",
    "FileRecord",
    "Format",
    "Manifest",
    "ParityReport",
    "Target",
    "artifact_dir",
    "artifact_lock",
    "exported_targets",
    "find",
    "get_target",
    "inspect",
    "installed_builder",
    "locked",
    "publish",
    "remove",
    "resolve_artifact",
    "sha256_tree",
    "update_manifest",
]
