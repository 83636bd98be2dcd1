"""Shared helpers for ncnn importers: shape-checked weight extraction."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pixelift.errors import UnknownArchitectureError, WeightFormatError
from pixelift.models.ncnn import Layer, NcnnModel

if TYPE_CHECKING:
    import torch

CONV_TYPES = ("Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise")


def kernel_shape(layer: Layer) -> tuple[int, int]:
    kw = int(layer.get(1))
    kh = int(layer.get(11, kw))
    return kh, kw


def conv_arrays(model: NcnnModel, layer: Layer) -> tuple[np.ndarray, np.ndarray | None]:
    """Weight as (O, I, kh, kw) in ncnn's storage order, and the bias (or None)."""
    blobs = model.weights[layer.name]
    out_ch = int(layer.get(0))
    kh, kw = kernel_shape(layer)
    groups = int(layer.get(7, 1)) if "DepthWise" in layer.type else 1
    w = blobs["weight"]
    per_out = out_ch * kh * kw
    if w.size % per_out:
        raise WeightFormatError(f"{layer.name}: {w.size} weights do not divide into {out_ch}x{kh}x{kw}")
    in_ch = w.size // per_out
    return w.reshape(out_ch, in_ch, kh, kw), blobs.get("bias") if groups else None


def check_shape(key: str, array: np.ndarray, expected: tuple[int, ...]) -> np.ndarray:
    if tuple(array.shape) != tuple(expected):
        raise WeightFormatError(f"{key}: ncnn weight has shape {tuple(array.shape)}, expected {expected}")
    return array


def to_tensor(array: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def expect_count(model: NcnnModel, layers: list[Layer], count: int, what: str) -> None:
    if len(layers) != count:
        raise UnknownArchitectureError(
            f"{model.param_path.name}: expected {count} {what}, found {len(layers)}; "
            "the graph is not the architecture the registry says"
        )


def load_into(module: torch.nn.Module, state: dict[str, np.ndarray]) -> torch.nn.Module:
    """Load a full state dict strictly, with shape checks that name the key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise WeightFormatError(f"state dict mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    tensors = {k: to_tensor(check_shape(k, v, tuple(own[k].shape))) for k, v in state.items()}
    module.load_state_dict(tensors, strict=True)
    return module


def freeze_reparam(module: torch.nn.Module) -> None:
    """update_params() re-merges the branches on every eval forward: needless work that
    also breaks the dynamo exporter. The merged weights are loaded, so make it a no-op."""
    for sub in module.modules():
        if hasattr(sub, "update_params") and hasattr(sub, "eval_conv"):
            sub.update_params = lambda: None  # type: ignore[assignment]  # torch: attributes are Tensor | Module
