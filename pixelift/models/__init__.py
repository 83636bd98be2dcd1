"""The model registry. Importing this never imports torch."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pixelift.ids import inside, validate_id
from pixelift.models.registry import Registry
from pixelift.models.spec import ModelSpec, Task
from pixelift.models.zoo import builtin_specs
from pixelift.paths import atomic_write_bytes, home

log = logging.getLogger(__name__)

REGISTRY = Registry(builtin_specs())

# Chosen by measured quality per second on a CPU (bench/quality_per_second.py; results in
# bench/results/quality_per_second.json): +3.58 dB over bicubic at 2.1 s per input MP.
DEFAULT_MODEL = "span-x2-ch48"


def _user_dir() -> Path:
    return home() / "models"


def user_specs() -> list[ModelSpec]:
    """Specs of the user's own models, saved by ``pixelift export FILE --id ID``."""
    out: list[ModelSpec] = []
    d = _user_dir()
    if d.is_dir():
        for f in sorted(d.glob("*.json")):
            try:
                spec = ModelSpec.from_dict(json.loads(f.read_text()))
                if spec.id != f.stem:
                    raise ValueError(f"it describes {spec.id!r}, not {f.stem!r}")
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning(
                    "ignoring the damaged user model spec %s (%s); re-export the model with "
                    "`pixelift export FILE --id %s --force`",
                    f,
                    exc,
                    f.stem,
                )
                continue
            out.append(spec)
    return out


def save_user_spec(spec: ModelSpec) -> None:
    if spec.id in REGISTRY:
        raise ValueError(f"{spec.id!r} is a built-in model id; choose another --id")
    path = inside(_user_dir(), f"{validate_id(spec.id)}.json")
    atomic_write_bytes(path, json.dumps(spec.to_dict(), indent=2).encode())


def all_specs() -> list[ModelSpec]:
    user = [s for s in user_specs() if s.id not in REGISTRY]
    return [*REGISTRY, *user]


def get(model_id: str) -> ModelSpec:
    """The spec of a built-in or user model, by id."""
    if model_id in REGISTRY:
        return REGISTRY.get(model_id)
    for spec in user_specs():
        if spec.id == model_id:
            return spec
    return REGISTRY.get(model_id)  # raises ModelNotFoundError with suggestions


__all__ = [
    "DEFAULT_MODEL",
    "REGISTRY",
    "ModelSpec",
    "Registry",
    "Task",
    "all_specs",
    "get",
    "save_user_spec",
    "user_specs",
]
