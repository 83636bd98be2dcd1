"""Real-ESRGAN RRDBNet (x4plus, x4plus-anime) from ncnn, onto spandrel's ESRGAN."""

from __future__ import annotations

from typing import Any

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


#: row strips the upsampling tail runs in, inside the exported graph: at x4 the tail's two
#: 64-channel maps at 16x the input's pixels held OpenVINO's peak at 8.45 KB per input pixel;
#: in 8 strips it is 2.62 KB (16: 2.78), at the same speed (bench/results/esrgan_strips.json)
TAIL_STRIPS = 8
#: the form recorded in the artifact's manifest: an artifact of another form is re-exported
FORM = f"tail-strips-{TAIL_STRIPS}"


class TailStrips(torch.nn.Module):
    """RRDBNet's layer sequence with its upsampling tail run in row strips of the body's
    features, each read with ``halo`` rows of context (every tail convolution's reach, at
    least its reach in input rows), so the result equals the unsplit one exactly."""

    def __init__(self, sequence: torch.nn.Sequential, strips: int) -> None:
        super().__init__()
        self.head, self.tail = sequence[:2], sequence[2:]
        self.strips = strips
        convs = [m for m in self.tail.modules() if isinstance(m, torch.nn.Conv2d)]
        self.halo = sum(int(c.dilation[0]) * (int(c.kernel_size[0]) // 2) for c in convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        h = f.shape[2]
        outs = []
        for i in range(self.strips):
            a, b = (h * i) // self.strips, (h * (i + 1)) // self.strips
            lo, hi = _at_least(a - self.halo, 0), _at_most(b + self.halo, h)
            y = self.tail(f[:, :, lo:hi])
            s = y.shape[2] // (hi - lo)  # the tail's scale, however it upsamples
            outs.append(y[:, :, (a - lo) * s : (b - lo) * s])
        return torch.cat(outs, dim=2)


def _at_least(v: Any, low: int) -> Any:
    """``max(v, low)`` that stays in the graph when ``v`` is a traced size (export); ints otherwise."""
    return v.clamp(min=low) if isinstance(v, torch.Tensor) else max(v, low)


def _at_most(v: Any, high: Any) -> Any:
    return v.clamp(max=high) if isinstance(v, torch.Tensor) else min(v, high)


def export_form(module: torch.nn.Module) -> tuple[torch.nn.Module, str | None]:
    """The module to export: a copy whose tail runs in :data:`TAIL_STRIPS` strips; the module
    itself (form None) when its layers are not RRDBNet's sequence (feature conv, shortcut
    body, tail)."""
    import copy

    seq = getattr(module, "model", None)
    if not isinstance(seq, torch.nn.Sequential) or len(seq) < 3 or type(seq[1]).__name__ != "ShortcutBlock":
        return module, None
    out = copy.deepcopy(module)
    out.model = TailStrips(seq, TAIL_STRIPS)
    return out.eval(), FORM
