"""Artifacts to sessions, cached by (artifact hash, provider request, options). Torch-free."""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from dataclasses import dataclass

import numpy as np

from pixelift.errors import PixeliftError
from pixelift.export.artifacts import Artifact, find
from pixelift.models.spec import ModelSpec
from pixelift.providers import PROVIDERS, Request, Selection, open_session, read_machine
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


def probe_input(spec: ModelSpec) -> np.ndarray:
    """A small aligned tile for the first-run check and the CPU micro-benchmark."""
    side = spec.alignment * max(1, 64 // spec.alignment)
    return np.full((1, 3, side, side), 0.5, np.float32)


def load(model_id: str, request: Request, *, auto_export: bool = True) -> LoadedModel:
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


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
