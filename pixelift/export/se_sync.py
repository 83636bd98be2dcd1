"""The SE-sync variant of a model with squeeze-excitation blocks (torch side, export only).

An SE block (Real-CUGAN, waifu2x CUNet/UpCUNet) scales its features by a function of
their *global spatial mean*, so a tile computes other means than the whole image and
tiles disagree (~43 dB on Real-CUGAN). :func:`wrap` returns a module whose SE blocks can
both report the statistic and take it from outside, so the runtime can compute the
whole image's means tile by tile and then give every tile the same ones (what
realcugan-ncnn-vulkan's "syncgap" mode does). Signature of the wrapped module, and so of
the exported graph (inputs and outputs in this order)::

    input    (N, 3, H, W)          the tile, as for the plain model
    se_box   (N, 4)                y0, y1, x0, x1 in the tile's input pixels: the region
                                   this tile *owns* for the statistics (its core; use
                                   +-1e6 at the image border)
    se_mix   (1,)                  1 = use se_k, 0 = use the tile's own means
    se_k     (N, C_k, 1, 1)        per SE block k: the mean to use when se_mix = 1
    ->
    output   (N, 3, sH, sW)
    se_sum_k   (N, C_k, 1, 1)      per SE block: sum of its input features over the
                                   positions whose receptive-field centre lies in se_box
    se_count_k (N, 1, 1, 1)        how many positions that was

Each block uses ``m = mix * se_k + (1 - mix) * own_mean``: with mix 0 or 1 one of the
terms is multiplied by exactly zero, so one graph is both the plain model and the
synced one. Feature position ``j`` of block ``k`` is centred at input coordinate
``(j + 0.5) * stride_k - extent_k`` (pixel ``i`` spans ``[i, i + 1)``); stride and
extent are measured here by running the module at three sizes (every op of these
networks is mirror-symmetric, so the feature grid is centred on the input). Centres lie
on a 1/12 px grid at worst, so they are compared shifted by 1/64 px: a centre never
sits on an integer box edge and two tiles never both claim one.

Why a second artifact rather than extra inputs on the main one: ONNX graph inputs have
no defaults (an initializer of the same name works on onnxruntime only), so a plain
``session.run(x)`` on OpenVINO would need every SE input; and the main artifact, its
hash and its parity checks stay exactly what they were. The variant is exported
on demand, only when a tiled run of an SE model needs it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Shift of feature centres before the half-open box test (see module doc).
CENTRE_SHIFT = 1.0 / 64
#: Stand-in for "unbounded" box edges at the image border.
OPEN = 1.0e6


def find_se_blocks(module: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """``(parent, attribute, block)`` of every SE block, in registration order.

    An SE block is a module named ``SEBlock`` with 1x1 ``conv1``/``conv2``: spandrel's
    Real-CUGAN one and :class:`pixelift.models.arch.waifu2x.SEBlock`, both ``x *
    sigmoid(conv2(relu(conv1(mean(x)))))``.
    """
    found = []
    for parent in module.modules():
        for name, child in parent.named_children():
            if type(child).__name__ == "SEBlock" and _is_1x1(child, "conv1") and _is_1x1(child, "conv2"):
                found.append((parent, name, child))
    return found


def _is_1x1(block: nn.Module, name: str) -> bool:
    conv = getattr(block, name, None)
    return isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)


@dataclass
class _State:
    """What the blocks read and write during one forward (plain Python, so tracing sees through it)."""

    active: bool = False
    box: torch.Tensor | None = None
    mix: torch.Tensor | None = None
    supplied: list[torch.Tensor] = field(default_factory=list)
    sums: dict[int, torch.Tensor] = field(default_factory=dict)
    counts: dict[int, torch.Tensor] = field(default_factory=dict)
    shapes: dict[int, tuple[int, int]] = field(default_factory=dict)


def _centres(x: torch.Tensor, dim: int, stride: float, extent: float) -> torch.Tensor:
    """Input coordinate of each feature position along ``dim``, shifted by CENTRE_SHIFT: (L,)."""
    line = x[0, 0, :, 0] if dim == 2 else x[0, 0, 0, :]
    j = torch.cumsum(torch.ones_like(line), 0) - 1.0  # 0..L-1; traces to a dynamic-length op
    return (j + 0.5) * stride - extent + CENTRE_SHIFT


class _SyncedSE(nn.Module):
    def __init__(self, block: nn.Module, index: int, state: _State) -> None:
        super().__init__()
        self.conv1, self.conv2 = block.conv1, block.conv2
        self.index = index
        self.state = state
        self.stride = 1.0
        self.extent = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st, k = self.state, self.index
        st.shapes[k] = (int(x.shape[2]), int(x.shape[3]))
        m = x.mean(dim=(2, 3), keepdim=True)
        if st.active:
            assert st.box is not None and st.mix is not None
            cy = _centres(x, 2, self.stride, self.extent)[None]  # (1, H)
            cx = _centres(x, 3, self.stride, self.extent)[None]
            b = st.box
            my = ((cy >= b[:, 0:1]) & (cy < b[:, 1:2])).to(x.dtype)  # (N, H)
            mx = ((cx >= b[:, 2:3]) & (cx < b[:, 3:4])).to(x.dtype)  # (N, W)
            rows = torch.matmul(x, mx[:, None, :, None])  # (N, C, H, 1)
            st.sums[k] = torch.matmul(my[:, None, None, :], rows)  # (N, C, 1, 1)
            st.counts[k] = (my.sum(1) * mx.sum(1))[:, None, None, None]
            m = st.mix * st.supplied[k] + (1.0 - st.mix) * m
        z = torch.sigmoid(self.conv2(F.relu(self.conv1(m))))
        return x * z


class SESync(nn.Module):
    """``module`` with synced SE blocks: ``forward(input, se_box, se_mix, *se_k)`` (module doc)."""

    def __init__(self, module: nn.Module, alignment: int) -> None:
        super().__init__()
        self.net = copy.deepcopy(module)
        self.state = _State()
        blocks = find_se_blocks(self.net)
        if not blocks:
            raise ValueError(f"{type(module).__name__} has no SE blocks")
        self.blocks: list[_SyncedSE] = []
        for k, (parent, name, block) in enumerate(blocks):
            synced = _SyncedSE(block, k, self.state)
            setattr(parent, name, synced)
            self.blocks.append(synced)
        self.channels = [int(b.conv2.out_channels) for b in self.blocks]
        self._measure(alignment)

    def _shapes(self, h: int) -> list[tuple[int, int]]:
        self.state.shapes.clear()
        with torch.no_grad():
            self.net(torch.zeros(1, 3, h, 2 * h))
        return [self.state.shapes[k] for k in range(len(self.blocks))]

    def _measure(self, alignment: int) -> None:
        """Stride and extent of every block's feature grid, from three input sizes (and both axes)."""
        sizes = [alignment * n for n in (12, 18, 30)]
        shapes = {h: self._shapes(h) for h in sizes}
        for k, block in enumerate(self.blocks):
            pts = sorted({(n, f) for h in sizes for n, f in zip((h, 2 * h), shapes[h][k], strict=True)})
            (n0, f0), (n1, f1) = pts[0], pts[-1]
            stride = Fraction(n1 - n0, f1 - f0)
            extent = (f0 * stride - n0) / 2
            if any(f * stride - n != 2 * extent for n, f in pts):
                raise ValueError(f"SE block {k}: feature size is not linear in the input size: {pts}")
            block.stride, block.extent = float(stride), float(extent)

    @property
    def geometry(self) -> list[dict[str, Any]]:
        return [{"channels": c, "stride": b.stride, "extent": b.extent} for c, b in zip(self.channels, self.blocks)]

    def forward(self, x: torch.Tensor, se_box: torch.Tensor, se_mix: torch.Tensor, *se: torch.Tensor) -> Any:
        st = self.state
        st.active, st.box, st.mix, st.supplied = True, se_box, se_mix, list(se)
        st.sums.clear()
        st.counts.clear()
        try:
            y = self.net(x)
        finally:
            st.active = False
        n = len(self.blocks)
        return (y, *(st.sums[k] for k in range(n)), *(st.counts[k] for k in range(n)))

    def example_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = x.shape[0]
        box = torch.tensor([[-OPEN, OPEN, -OPEN, OPEN]] * n, dtype=torch.float32)
        return (x, box, torch.zeros(1), *(torch.zeros(n, c, 1, 1) for c in self.channels))

    def input_names(self) -> list[str]:
        return ["input", "se_box", "se_mix", *(f"se_{k}" for k in range(len(self.blocks)))]

    def output_names(self) -> list[str]:
        n = len(self.blocks)
        return ["output", *(f"se_sum_{k}" for k in range(n)), *(f"se_count_{k}" for k in range(n))]


def wrap(module: nn.Module, alignment: int) -> SESync:
    return SESync(module, alignment).eval()


def count_se_blocks(module: nn.Module) -> int:
    return len(find_se_blocks(module))
