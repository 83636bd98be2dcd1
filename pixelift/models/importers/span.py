"""SPAN from ncnn, onto spandrel's SPAN.

ncnn keeps only each Conv3XC's merged 3x3 ``eval_conv``; spandrel's loader wants the
training branches. We fill them so that ``update_params()`` reproduces the merged
weights exactly: ``sk`` = 0, ``conv[0]``/``conv[2]`` = identity 1x1 (zero-padded to
the gain width), ``conv[1]`` = the 3x3 in its top-left block.
The input normalisation (mean, x255) is read from the graph, not assumed.
"""

from __future__ import annotations

import numpy as np
import torch

from pixelift.errors import UnknownArchitectureError, WeightFormatError
from pixelift.models.importers._common import conv_arrays, freeze_reparam
from pixelift.models.ncnn import NcnnModel
from pixelift.models.spec import ModelSpec

GAIN = 2  # Conv3XC(gain1=2) throughout SPAN


def _key(layer_name: str) -> str:
    parts = [p for p in layer_name.split("/") if p]
    if not parts or parts[-1] != "Conv":
        raise UnknownArchitectureError(f"unexpected SPAN layer name {layer_name!r}")
    parts = parts[:-1]
    # torch's ONNX scopes name Sequential children by their full path ("upsampler.0")
    dotted = [i for i, p in enumerate(parts) if "." in p]
    return ".".join(parts[dotted[-1] :] if dotted else parts)


def _identity_1x1(rows: int, cols: int) -> np.ndarray:
    eye = np.zeros((rows, cols, 1, 1), np.float32)
    n = min(rows, cols)
    eye[np.arange(n), np.arange(n), 0, 0] = 1.0
    return eye


def _expand_conv3xc(prefix: str, w: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    c_out, c_in = w.shape[:2]
    w2 = np.zeros((c_out * GAIN, c_in * GAIN, 3, 3), np.float32)
    w2[:c_out, :c_in] = w
    b2 = np.zeros(c_out * GAIN, np.float32)
    b2[:c_out] = b
    return {
        f"{prefix}.sk.weight": np.zeros((c_out, c_in, 1, 1), np.float32),
        f"{prefix}.sk.bias": np.zeros(c_out, np.float32),
        f"{prefix}.conv.0.weight": _identity_1x1(c_in * GAIN, c_in),
        f"{prefix}.conv.0.bias": np.zeros(c_in * GAIN, np.float32),
        f"{prefix}.conv.1.weight": w2,
        f"{prefix}.conv.1.bias": b2,
        f"{prefix}.conv.2.weight": _identity_1x1(c_out, c_out * GAIN),
        f"{prefix}.conv.2.bias": np.zeros(c_out, np.float32),
        f"{prefix}.eval_conv.weight": w,
        f"{prefix}.eval_conv.bias": b,
    }


def state_dict_from_ncnn(model: NcnnModel) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    for layer in model.layers("Convolution"):
        key = _key(layer.name)
        w, b = conv_arrays(model, layer)
        if b is None:
            raise WeightFormatError(f"{layer.name}: SPAN convolutions have a bias")
        if key.endswith(".eval_conv"):
            state.update(_expand_conv3xc(key.removesuffix(".eval_conv"), w, b))
        else:
            state[f"{key}.weight"], state[f"{key}.bias"] = w, b
    return state


def normalisation(model: NcnnModel) -> tuple[tuple[float, float, float], float, bool]:
    """(mean, img_range, norm) read from the graph's MemoryData/Sub/Mul prologue."""
    mem = model.layers("MemoryData")
    if not mem:
        return (0.0, 0.0, 0.0), 1.0, False
    mean = model.weights[mem[0].name]["data"]
    if mean.size != 3:
        raise UnknownArchitectureError(f"{model.param_path.name}: mean constant has {mean.size} values")
    img_range = 1.0
    for layer in model.layers("BinaryOp"):
        # the scalar multiply right after the mean subtraction: op 2 (mul), with_scalar 1
        if layer.bottoms and layer.bottoms[0] == "/Sub_output_0" and layer.get(0) == 2 and layer.get(1) == 1:
            img_range = float(layer.get(2))
    return (float(mean[0]), float(mean[1]), float(mean[2])), img_range, True


def from_ncnn(model: NcnnModel, spec: ModelSpec) -> torch.nn.Module:
    import spandrel

    state = state_dict_from_ncnn(model)
    mean, img_range, norm = normalisation(model)
    tensors = {k: torch.from_numpy(v.copy()) for k, v in state.items()}
    if not norm:
        tensors["no_norm"] = torch.zeros(1)
    desc = spandrel.ModelLoader().load_from_state_dict(tensors)
    if desc.architecture.id != "SPAN" or desc.scale != spec.scale:
        raise UnknownArchitectureError(f"{spec.id}: spandrel saw {desc.architecture.id} x{desc.scale}")
    net = desc.model
    net.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    net.img_range = img_range
    with torch.no_grad():
        for key in [k for k in state if k.endswith("eval_conv.weight")]:
            got = net.get_submodule(key.removesuffix(".weight")).weight.numpy()
            if not np.allclose(got, state[key], atol=1e-6):
                raise WeightFormatError(f"{spec.id}: re-parameterised {key} does not reproduce ncnn's weight")
    freeze_reparam(net)
    return net
