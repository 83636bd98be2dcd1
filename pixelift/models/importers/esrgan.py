"""Real-ESRGAN RRDBNet (x4plus, x4plus-anime) from ncnn, onto spandrel's ESRGAN."""

from __future__ import annotations

import numpy as np
import torch

from pixelift.errors import UnknownArchitectureError
from pixelift.models.importers._common import conv_arrays, load_into
from pixelift.models.ncnn import NcnnModel
from pixelift.models.spec import ModelSpec

_HEAD = ["conv_first"]
_TAIL = ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


def conv_keys(num_blocks: int) -> list[str]:
    body = [f"body.{i}.rdb{r}.conv{c}" for i in range(num_blocks) for r in (1, 2, 3) for c in range(1, 6)]
    return _HEAD + body + _TAIL


def state_dict_from_ncnn(model: NcnnModel) -> dict[str, np.ndarray]:
    convs = model.layers("Convolution")
    if (len(convs) - 6) % 15:
        raise UnknownArchitectureError(f"{model.param_path.name}: {len(convs)} convolutions do not form an RRDBNet x4")
    state: dict[str, np.ndarray] = {}
    for key, layer in zip(conv_keys((len(convs) - 6) // 15), convs, strict=True):
        w, b = conv_arrays(model, layer)
        state[f"{key}.weight"] = w
        state[f"{key}.bias"] = b if b is not None else np.zeros(w.shape[0], np.float32)
    return state


def from_ncnn(model: NcnnModel, spec: ModelSpec) -> torch.nn.Module:
    import spandrel

    state = state_dict_from_ncnn(model)
    desc = spandrel.ModelLoader().load_from_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    if desc.architecture.id != "ESRGAN" or desc.scale != spec.scale:
        raise UnknownArchitectureError(f"{spec.id}: spandrel saw {desc.architecture.id} x{desc.scale}")
    # spandrel renames to the old ESRGAN layout; reload strictly to prove every key matched.
    module = desc.model
    load_into(module, {k: v.numpy() for k, v in desc.model.state_dict().items()})
    return module
