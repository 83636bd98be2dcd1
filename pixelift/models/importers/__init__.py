"""Importers: turn a registry entry's weights into a ``torch.nn.Module``.

Needs the ``export`` extra (torch, spandrel). One module per architecture; each
exposes ``from_ncnn(model, spec) -> nn.Module``. The module honours the
:class:`~pixelift.models.spec.ModelSpec` contract: NCHW RGB 0..1 in, ``scale``× out,
reflect-padding for ``spec.border`` done inside.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from pixelift.errors import MissingExtraError, UnknownArchitectureError
from pixelift.models import ncnn as ncnn_format
from pixelift.models.architectures import architecture
from pixelift.models.sources import NcnnPackageSource, PackageFileSource
from pixelift.models.spec import ModelSpec

if TYPE_CHECKING:
    import torch


def require_torch() -> None:
    try:
        import spandrel  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            "importing weights into PyTorch needs the export extra: pip install 'pixelift[export]'"
        ) from exc


def load_ncnn(spec: ModelSpec) -> ncnn_format.NcnnModel:
    src = spec.source(NcnnPackageSource)
    if src is None:
        raise UnknownArchitectureError(f"{spec.id} has no ncnn weight source")
    param, binf = src.files()
    return ncnn_format.load(param, binf)


def build_torch(spec: ModelSpec) -> torch.nn.Module:
    """Build the PyTorch module for a registry entry, in eval mode, fp32, on CPU."""
    require_torch()
    source = spec.sources[0]
    if not isinstance(source, NcnnPackageSource | PackageFileSource):
        from pixelift.models.importers import userfile

        return userfile.from_spec(spec)
    mod = _importer(spec)
    module = mod.from_ncnn(load_ncnn(spec), spec) if isinstance(source, NcnnPackageSource) else mod.from_package(spec)
    return module.eval().float()


def form_name(spec: ModelSpec) -> str | None:
    """The form :func:`export_form` gives ``spec``'s module, without building it (a cached artifact
    of another form is re-exported)."""
    importer = architecture(spec.architecture).importer
    return getattr(importlib.import_module(f"pixelift.models.importers.{importer}"), "FORM", None) if importer else None


def export_form(spec: ModelSpec, module: torch.nn.Module) -> tuple[torch.nn.Module, str | None]:
    """The module an ONNX graph is exported from, and its form's name for the manifest (None: the
    module itself). An architecture may restructure its graph for memory, never its output
    (ESRGAN: :func:`pixelift.models.importers.esrgan.export_form`)."""
    if form_name(spec) is None:
        return module, None
    return _importer(spec).export_form(module)  # type: ignore[no-any-return]


def _importer(spec: ModelSpec) -> ModuleType:
    importer = architecture(spec.architecture).importer
    if importer is None:
        raise UnknownArchitectureError(f"{spec.id}: no importer for architecture {spec.architecture!r}")
    return importlib.import_module(f"pixelift.models.importers.{importer}")


def original(spec: ModelSpec, x: np.ndarray) -> tuple[str, np.ndarray] | None:
    """The original implementation's output for the graph input ``x`` (NCHW), the oracle every
    import is checked against: the official ncnn runtime for ncnn weights, the package's own
    PyTorch code for a package's ``.pth``; None for a user's file (spandrel is its reference)."""
    source = spec.sources[0]
    if isinstance(source, NcnnPackageSource):
        from pixelift.models import oracle

        param, binf = source.files()
        return "ncnn-original", oracle.reference(spec, x[0], param, binf)[None]
    if isinstance(source, PackageFileSource):
        return f"{source.distribution}-original", _importer(spec).original(spec, x)
    return None
