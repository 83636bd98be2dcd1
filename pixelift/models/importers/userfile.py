"""A user's own ``.pth``/``.safetensors`` weights; spandrel detects the architecture.

Pickles are loaded with ``torch.load(weights_only=True)`` only: a pickle that needs
arbitrary code is refused, never executed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from pixelift.errors import (
    UnknownArchitectureError,
    UnsafeWeightsError,
    WeightFormatError,
)
from pixelift.models.importers._common import freeze_reparam
from pixelift.models.sources import LocalFileSource, UrlSource, WeightSource
from pixelift.models.spec import ModelSpec, Task
from pixelift.paths import sha256_file

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from spandrel import canonicalize_state_dict

    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightFormatError(f"{path}: not a readable safetensors file: {exc}") from exc
    elif suffix in PICKLE_SUFFIXES:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise UnsafeWeightsError(
                f"{path}: refused: this pickle needs more than plain tensors to load "
                "(torch.load(weights_only=True) rejected it). Convert it to .safetensors "
                "with a tool you trust."
            ) from exc
        except Exception as exc:  # junk bytes fail deep in the unpickler (KeyError, struct errors...)
            raise WeightFormatError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {exc})") from exc
    else:
        raise WeightFormatError(f"{path}: unsupported weight file type {suffix!r} (use .pth or .safetensors)")
    if not isinstance(state, dict):
        raise WeightFormatError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return canonicalize_state_dict(state)


def describe(state: dict[str, torch.Tensor], origin: str) -> Any:
    import spandrel

    try:
        desc = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError as exc:
        raise UnknownArchitectureError(f"{origin}: spandrel does not recognise this architecture") from exc
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise UnknownArchitectureError(f"{origin}: {desc.architecture.id} is not an image-to-image model")
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise UnknownArchitectureError(
            f"{origin}: {desc.architecture.id} takes {desc.input_channels} and gives "
            f"{desc.output_channels} channels; pixelift needs RGB in and out"
        )
    return desc


def spec_from_file(path: Path, model_id: str, *, url: str | None = None, sha256: str | None = None) -> ModelSpec:
    """Build a registry entry for a user's weight file (local, or already downloaded from ``url``)."""
    import spandrel

    desc = describe(load_state_dict(path), str(path))
    digest = sha256 or sha256_file(path)
    source: WeightSource = UrlSource(url, digest, path.name) if url else LocalFileSource(str(path.resolve()), digest)
    sizes = desc.size_requirements
    return ModelSpec(
        id=model_id,
        task=Task.UPSCALE if desc.scale > 1 else Task.RESTORE,
        scale=desc.scale,
        architecture=desc.architecture.id,
        params=sum(p.numel() for p in desc.model.parameters()),
        purpose=f"user model: {desc.architecture.id} x{desc.scale} ({', '.join(desc.tags) or 'no tags'})",
        content="general",
        license="unknown (user-supplied weights)",
        license_source=f"user file {path.name}",
        sources=(source,),
        alignment=max(1, sizes.multiple_of),
        tile_safe=desc.tiling != spandrel.ModelTiling.INTERNAL,
        half_safe=bool(desc.supports_half),
    )


def from_spec(spec: ModelSpec) -> torch.nn.Module:
    (path,) = spec.sources[0].files()
    desc = describe(load_state_dict(path), str(path))
    if desc.architecture.id != spec.architecture or desc.scale != spec.scale:
        raise UnknownArchitectureError(
            f"{spec.id}: the file now holds {desc.architecture.id} x{desc.scale}, "
            f"the spec says {spec.architecture} x{spec.scale}"
        )
    module = desc.model.eval()
    freeze_reparam(module)
    return module
