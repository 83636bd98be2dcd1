"""Helpers shared by the per-family importer tests (these need the export extra)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from pixelift.models import get
from pixelift.models.importers import build_torch


@functools.cache
def model(model_id: str) -> torch.nn.Module:
    return build_torch(get(model_id))


def files(model_id: str) -> tuple[Path, Path]:
    param, binf = get(model_id).sources[0].files()
    return param, binf


def run_torch(module: torch.nn.Module, chw: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(chw)[None])[0].numpy()


def export_onnx(model_id: str, path: Path) -> None:
    """The module exported by the project's own exporter (dynamic batch/H/W, traced at 64 px)."""
    from pixelift.export.onnx_export import export_module

    export_module(model(model_id), get(model_id), path)
