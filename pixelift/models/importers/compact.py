"""Real-ESRGAN SRVGGNetCompact (animevideov3) from ncnn, onto spandrel's Compact."""

from __future__ import annotations

import numpy as np
import torch

from pixelift.errors import UnknownArchitectureError, WeightFormatError
from pixelift.models.importers._common import conv_arrays, load_into
from pixelift.models.ncnn import NcnnModel
from pixelift.models.spec import ModelSpec


def state_dict_from_ncnn(model: NcnnModel) -> dict[str, np.ndarray]:
    layers = model.layers("Convolution", "PReLU")
    types = [lyr.type for lyr in layers]
    if (
        not types
        or types[-1] != "Convolution"
        or types[::2] != ["Convolution"] * ((len(types) + 1) // 2)
        or types[1::2] != ["PReLU"] * (len(types) // 2)
    ):
        raise UnknownArchitectureError(f"{model.param_path.name}: not a conv/PReLU chain (SRVGGNetCompact)")
    state: dict[str, np.ndarray] = {}
    for i, layer in enumerate(layers):
        if layer.type == "Convolution":
            w, b = conv_arrays(model, layer)
            if b is None:
                raise WeightFormatError(f"{layer.name}: SRVGGNetCompact convolutions have a bias")
            state[f"body.{i}.weight"], state[f"body.{i}.bias"] = w, b
        else:
            state[f"body.{i}.weight"] = model.weights[layer.name]["slope"]
    return state


def from_ncnn(model: NcnnModel, spec: ModelSpec) -> torch.nn.Module:
    import spandrel

    state = state_dict_from_ncnn(model)
    tensors = {k: torch.from_numpy(v.copy()) for k, v in state.items()}
    desc = spandrel.ModelLoader().load_from_state_dict(tensors)
    if desc.architecture.id != "Compact" or desc.scale != spec.scale:
        raise UnknownArchitectureError(f"{spec.id}: spandrel saw {desc.architecture.id} x{desc.scale}")
    return load_into(desc.model, state)
