"""Artifacts to sessions, cached by (artifact hash, provider request, options). Torch-free."""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from dataclasses import dataclass

from pixelift.errors import PixeliftError
from pixelift.export.artifacts import Artifact, find
from pixelift.models.spec import ModelSpec
from pixelift.providers.select import Request, Selection, open_session

log = logging.getLogger(__name__)

ONNX_FP32 = "onnx-fp32"


class ArtifactMissingError(PixeliftError):
    """The model has no exported artifact and this install cannot export one."""


@dataclass(frozen=True)
class LoadedModel:
    spec: ModelSpec
    artifact: Artifact
    selection: Selection

    @property
    def provider(self) -> str:
        return self.selection.provider


def resolve_artifact(model_id: str, *, auto_export: bool = True) -> Artifact:
    """The verified ONNX artifact of ``model_id``; exports it first when torch is installed."""
    art = find(model_id, ONNX_FP32)
    if art is None:
        if not auto_export or importlib.util.find_spec("torch") is None:
            raise ArtifactMissingError(
                f"{model_id} is not exported yet; run `pixelift export {model_id}` "
                "(needs the export extra: pip install 'pixelift[export]')"
            )
        from pixelift.export import to_onnx

        log.warning("%s is not exported yet; exporting it now (one time)", model_id)
        art = to_onnx(model_id)
    art.verify()
    return art


_CACHE: dict[tuple[str, str, bool, str], Selection] = {}
_LOCK = threading.Lock()


def load(model_id: str, request: Request, *, auto_export: bool = True) -> LoadedModel:
    art = resolve_artifact(model_id, auto_export=auto_export)
    spec = ModelSpec.from_dict(art.manifest["spec"])
    key = (art.manifest["sha256"], request.provider, request.strict, json.dumps(request.options, sort_keys=True))
    with _LOCK:
        sel = _CACHE.get(key)
        if sel is None:
            sel = open_session(art.path, request)
            _CACHE[key] = sel
    return LoadedModel(spec, art, sel)


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
