"""waifu2x UpConv7 / CUNet / UpCUNet from the ncnn graphs of waifu2x-ncnn-vulkan.

The ncnn layers that carry weights (Convolution, Deconvolution, InnerProduct) are
mapped, in graph order, onto the weighted submodules of the modules in
:mod:`pixelift.models.arch.waifu2x` (also in definition order). Every layer's
type, kernel, stride, padding and fused activation is checked against the module
before any weight is copied, and the graph's Crop offsets, Eltwise and Pooling
operations are checked against the architecture: a graph of another architecture
raises :class:`UnknownArchitectureError`, weights of the wrong size raise
:class:`WeightFormatError`.

Weight layouts: Convolution is stored (out, in, kh, kw) like PyTorch. Deconvolution
is stored (out, in, kh, kw) too, unflipped (ncnn scatters each input pixel through
the kernel as-is, like ``ConvTranspose2d``), so it only needs the axis swap to
PyTorch's (in, out, kh, kw). InnerProduct is (out, in), used as a 1x1 convolution.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import nn

from pixelift.errors import UnknownArchitectureError, WeightFormatError
from pixelift.models.arch.waifu2x import (
    CUNet,
    RawNet,
    SEBlock,
    UpConv7,
    UpCUNet,
    Waifu2x,
)
from pixelift.models.importers._common import (
    conv_arrays,
    expect_count,
    kernel_shape,
    load_into,
)
from pixelift.models.ncnn import Layer, NcnnModel
from pixelift.models.spec import ModelSpec

WEIGHTED = ("Convolution", "Deconvolution", "InnerProduct")
ALLOWED = frozenset({"Input", "Split", "Crop", "Eltwise", "Pooling", "Scale", *WEIGHTED})

# ncnn fused activation ids (param 9)
ACT_NONE, ACT_RELU, ACT_LEAKY, ACT_SIGMOID = 0, 1, 2, 4

# Crop offsets, in graph order: the U-Net skips, then the final residual.
CROPS: dict[type[nn.Module], list[int]] = {UpConv7: [], CUNet: [4, 4, 16, 20], UpCUNet: [4, 4, 16, 20]}


def raw_net(spec: ModelSpec) -> RawNet:
    """The raw network a registry entry describes (no weights)."""
    if spec.architecture == "waifu2x-UpConv7" and spec.scale == 2:
        return UpConv7()
    if spec.architecture == "waifu2x-CUNet" and spec.scale == 1:
        return CUNet()
    if spec.architecture == "waifu2x-CUNet" and spec.scale == 2:
        return UpCUNet()
    raise UnknownArchitectureError(f"{spec.id}: no waifu2x network for {spec.architecture} x{spec.scale}")


def _weighted_modules(net: nn.Module) -> list[tuple[str, nn.Conv2d | nn.ConvTranspose2d]]:
    return [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]


def _expected(name: str, mod: nn.Module, last: bool) -> tuple[str, int]:
    """(ncnn layer type, fused activation) the graph must have for this submodule."""
    if name.endswith("seblock.conv1"):
        return "InnerProduct", ACT_RELU
    if name.endswith("seblock.conv2"):
        return "InnerProduct", ACT_SIGMOID
    kind = "Deconvolution" if isinstance(mod, nn.ConvTranspose2d) else "Convolution"
    return kind, ACT_NONE if (last or name.endswith("conv_bottom")) else ACT_LEAKY


def _int(layer: Layer, key: int, default: int) -> int:
    return int(layer.get(key, default))


def _check_layer(model: NcnnModel, layer: Layer, name: str, mod: nn.Conv2d | nn.ConvTranspose2d, last: bool) -> None:
    where = f"{model.param_path.name}: layer {layer.name} (for {name})"
    kind, act = _expected(name, mod, last)
    if layer.type != kind:
        raise UnknownArchitectureError(f"{where} is {layer.type}, expected {kind}")
    got_act = _int(layer, 9, ACT_NONE)
    if got_act != act:
        raise UnknownArchitectureError(f"{where} has activation {got_act}, expected {act}")
    if act == ACT_LEAKY and layer.get(10) != [0.1]:
        raise UnknownArchitectureError(f"{where} LeakyReLU slope {layer.get(10)}, expected 0.1")
    if kind == "InnerProduct":
        if _int(layer, 0, 0) != mod.out_channels:
            raise UnknownArchitectureError(f"{where} has {layer.get(0)} outputs, expected {mod.out_channels}")
        return
    kh, kw = kernel_shape(layer)
    sw = _int(layer, 3, 1)
    stride = (_int(layer, 13, sw), sw)
    pl = _int(layer, 4, 0)
    pt = _int(layer, 14, pl)
    pads = (pl, _int(layer, 15, pl), pt, _int(layer, 16, pt))
    dw = _int(layer, 2, 1)
    geometry = ((kh, kw), stride, pads, (_int(layer, 12, dw), dw), _int(layer, 0, 0))
    ph, pw = cast("tuple[int, int]", mod.padding)  # pixelift.models.arch.waifu2x pads with ints, never a string
    want = (tuple(mod.kernel_size), tuple(mod.stride), (pw, pw, ph, ph), tuple(mod.dilation), mod.out_channels)
    if geometry != want:
        raise UnknownArchitectureError(f"{where}: (kernel, stride, pads, dilation, out) {geometry}, expected {want}")
    if kind == "Deconvolution" and any(k in layer.params for k in (18, 19, 20, 21)):
        raise UnknownArchitectureError(f"{where}: output padding/size parameters are not supported")


def _arrays(model: NcnnModel, layer: Layer, mod: nn.Conv2d | nn.ConvTranspose2d) -> tuple[np.ndarray, np.ndarray]:
    if layer.type == "InnerProduct":
        blobs = model.weights.get(layer.name, {})
        w = blobs.get("weight")
        out_ch = _int(layer, 0, 0)
        if w is None or out_ch <= 0 or w.size % out_ch:
            raise WeightFormatError(f"{layer.name}: InnerProduct weights do not divide into {out_ch} outputs")
        weight, bias = w.reshape(out_ch, w.size // out_ch, 1, 1), blobs.get("bias")
    else:
        if layer.name not in model.weights:
            raise WeightFormatError(f"{layer.name}: no weights in {model.bin_path.name}")
        weight, bias = conv_arrays(model, layer)
        if layer.type == "Deconvolution":
            weight = weight.transpose(1, 0, 2, 3)  # ncnn (out, in, kh, kw) -> torch (in, out, kh, kw)
    if bias is None:
        raise WeightFormatError(f"{layer.name}: has no bias; the waifu2x layers all have one")
    return weight, bias


def _check_topology(model: NcnnModel, net: nn.Module) -> None:
    name = model.param_path.name
    unknown = sorted({lyr.type for lyr in model.graph.layers} - ALLOWED)
    if unknown:
        raise UnknownArchitectureError(f"{name}: layer types {unknown} are not part of waifu2x {type(net).__name__}")
    crops = model.layers("Crop")
    offsets = [(_int(c, 0, 0), _int(c, 1, 0)) for c in crops]
    want = [(o, o) for o in CROPS[type(net)]]
    if offsets != want:
        raise UnknownArchitectureError(f"{name}: Crop offsets {offsets}, expected {want} for {type(net).__name__}")
    expect_count(model, model.layers("Eltwise"), len(want), "Eltwise sums")
    if any(_int(e, 0, 1) != 1 for e in model.layers("Eltwise")):
        raise UnknownArchitectureError(f"{name}: an Eltwise layer is not a sum")
    n_se = sum(isinstance(m, SEBlock) for m in net.modules())
    expect_count(model, model.layers("Pooling"), n_se, "global-average Pooling layers (SE blocks)")
    expect_count(model, model.layers("Scale"), n_se, "Scale layers (SE blocks)")
    if any((_int(p, 0, 0), _int(p, 4, 0)) != (1, 1) for p in model.layers("Pooling")):
        raise UnknownArchitectureError(f"{name}: a Pooling layer is not global average pooling")


def state_dict_from_ncnn(model: NcnnModel, net: nn.Module) -> dict[str, np.ndarray]:
    """``net``'s state dict from the ncnn weights, after checking the graph is ``net``."""
    _check_topology(model, net)
    layers = model.layers(*WEIGHTED)
    mods = _weighted_modules(net)
    expect_count(model, layers, len(mods), f"weighted layers for {type(net).__name__}")
    state: dict[str, np.ndarray] = {}
    for i, (layer, (name, mod)) in enumerate(zip(layers, mods, strict=True)):
        _check_layer(model, layer, name, mod, last=i == len(mods) - 1)
        state[f"{name}.weight"], state[f"{name}.bias"] = _arrays(model, layer, mod)
    return state


def from_ncnn(model: NcnnModel, spec: ModelSpec) -> torch.nn.Module:
    net = raw_net(spec)
    load_into(net, state_dict_from_ncnn(model, net))
    return Waifu2x(net, border=spec.border)
