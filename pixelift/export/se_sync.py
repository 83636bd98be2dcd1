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
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixelift.models.spec import ModelSpec

log = logging.getLogger(__name__)
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
    stop_at: int | None = None  # statistics graph of this block: stop right after its statistics


class _Stop(Exception):
    """Raised by the block a statistics graph stops at; tracing records nothing after it."""


def _centres(x: torch.Tensor, dim: int, stride: float, extent: float) -> torch.Tensor:
    """Input coordinate of each feature position along ``dim``, shifted by CENTRE_SHIFT: (L,)."""
    line = x[0, 0, :, 0] if dim == 2 else x[0, 0, 0, :]
    j = torch.cumsum(torch.ones_like(line), 0) - 1.0  # 0..L-1; traces to a dynamic-length op
    return (j + 0.5) * stride - extent + CENTRE_SHIFT


class _SyncedSE(nn.Module):
    def __init__(self, block: nn.Module, index: int, state: _State) -> None:
        super().__init__()
        # find_se_blocks admits only blocks whose conv1/conv2 are 1x1 nn.Conv2d
        self.conv1, self.conv2 = cast(nn.Conv2d, block.conv1), cast(nn.Conv2d, block.conv2)
        self.index = index
        self.state = state
        self.stride = 1.0
        self.extent = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st, k = self.state, self.index
        st.shapes[k] = (int(x.shape[2]), int(x.shape[3]))
        m = x.mean(dim=(2, 3), keepdim=True)
        if st.active and st.stop_at is not None and k < st.stop_at:
            m = st.supplied[k]
        elif st.active:
            assert st.box is not None
            cy = _centres(x, 2, self.stride, self.extent)[None]  # (1, H)
            cx = _centres(x, 3, self.stride, self.extent)[None]
            b = st.box
            my = ((cy >= b[:, 0:1]) & (cy < b[:, 1:2])).to(x.dtype)  # (N, H)
            mx = ((cx >= b[:, 2:3]) & (cx < b[:, 3:4])).to(x.dtype)  # (N, W)
            rows = torch.matmul(x, mx[:, None, :, None])  # (N, C, H, 1)
            st.sums[k] = torch.matmul(my[:, None, None, :], rows)  # (N, C, 1, 1)
            st.counts[k] = (my.sum(1) * mx.sum(1))[:, None, None, None]
            if st.stop_at is not None:
                raise _Stop
            assert st.mix is not None
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
        if list(self.state.shapes) != list(range(len(self.blocks))):
            raise ValueError(f"SE blocks run in order {list(self.state.shapes)}, not in registration order")
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
        return [
            {"channels": c, "stride": b.stride, "extent": b.extent}
            for c, b in zip(self.channels, self.blocks, strict=True)
        ]

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


class SEStats(nn.Module):
    """Statistics graph of SE block ``k``: ``forward(input, se_box, se_0..se_{k-1}) -> (se_sum_k, se_count_k)``.

    Blocks before ``k`` use the supplied means; the network stops right after block
    ``k`` has taken its statistics, so the graph holds only the layers up to it (the
    runtime fixes the blocks one after the other at a fraction of a full run each).
    """

    def __init__(self, sync: SESync, k: int) -> None:
        super().__init__()
        self.sync, self.k = sync, k

    def forward(self, x: torch.Tensor, se_box: torch.Tensor, *se: torch.Tensor) -> Any:
        st, k = self.sync.state, self.k
        st.active, st.box, st.mix, st.supplied, st.stop_at = True, se_box, None, list(se), k
        st.sums.clear()
        st.counts.clear()
        try:
            self.sync.net(x)
        except _Stop:
            pass
        finally:
            st.active, st.stop_at = False, None
        return st.sums[k], st.counts[k]

    def example_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        full = self.sync.example_inputs(x)
        return (full[0], full[1], *full[3 : 3 + self.k])

    def input_names(self) -> list[str]:
        return ["input", "se_box", *(f"se_{j}" for j in range(self.k))]

    def output_names(self) -> list[str]:
        return [f"se_sum_{self.k}", f"se_count_{self.k}"]


def stats_file(k: int) -> str:
    return f"stats_{k}.onnx"


def wrap(module: nn.Module, alignment: int) -> SESync:
    return SESync(module, alignment).eval()


def count_se_blocks(module: nn.Module) -> int:
    return len(find_se_blocks(module))


def export_io(w: SESync | SEStats) -> Any:
    """The ONNX inputs/outputs of ``w`` for :func:`pixelift.export.onnx_export.export_module`."""
    from pixelift.export.onnx_export import ExportIO

    batch = {0: "batch"}
    names = [n for n in w.input_names() + w.output_names() if n not in ("input", "output", "se_mix")]
    geometry = (w if isinstance(w, SESync) else w.sync).geometry
    return ExportIO(
        example_inputs=w.example_inputs,
        input_names=w.input_names(),
        output_names=w.output_names(),
        dynamic_axes={n: batch for n in names},
        metadata={"se_blocks": json.dumps(geometry)},
    )


def geometry_or_empty(module: nn.Module, alignment: int) -> list[dict[str, Any]]:
    """The SE blocks' geometry for the manifest; empty when there are none or they cannot be synced."""
    if not find_se_blocks(module):
        return []
    try:
        return wrap(module, alignment).geometry
    except Exception as exc:  # e.g. a user model that pads to its own alignment inside
        log.info("%s: SE blocks found but not syncable (%s); tiles will use their own means", type(module), exc)
        return []


def _run_se(
    path: Path,
    x: np.ndarray,
    provider: str,
    geometry: list[dict[str, Any]],
    mix: float,
    means: Any = None,
    options: Mapping[str, Any] | None = None,
) -> list[np.ndarray]:
    """Run an SE-sync or statistics graph on ``x`` with open boxes; feeds only the inputs it has."""
    from pixelift.providers import get_provider, provider_options

    n = len(x)
    feeds = {
        "input": x,
        "se_box": np.tile(np.array([[-OPEN, OPEN, -OPEN, OPEN]], np.float32), (n, 1)),
        "se_mix": np.array([mix], np.float32),
    }
    for k, g in enumerate(geometry):
        m = np.zeros(g["channels"], np.float32) if means is None else means[k]
        feeds[f"se_{k}"] = np.broadcast_to(np.asarray(m, np.float32).reshape(1, -1, 1, 1), (n, g["channels"], 1, 1))
    sess = get_provider(provider).open(path, provider_options(provider, options))
    return sess.run_feeds({name: feeds[name] for name in sess.input_names})


def _stats_check(name: str, want: np.ndarray, got: np.ndarray, image: str, threshold_db: float) -> Any:
    """Means compared as PSNR after scaling by the largest |mean| (features are not in 0..1)."""
    from pixelift.export import parity

    peak = max(float(np.abs(want).max()), 1e-12)
    return parity.compare("se-sync graph", want / peak, name, got / peak, image, threshold_db)


def parity_checks(
    spec: ModelSpec,
    module: nn.Module,
    path: Path,
    stats: dict[str, Path],
    geometry: list[dict[str, Any]],
    threshold_db: float,
) -> list[Any]:
    """The SE-sync graphs vs the plain torch module, on the parity crop.

    ``se_mix = 0`` on onnxruntime and OpenVINO (f32) must be the plain model; ``se_mix = 1``
    fed with the whole-image means the graph itself reported must be too (onnxruntime).
    Each statistics graph, fed the earlier blocks' means, must report the same means as
    the full graph (onnxruntime; OpenVINO f32 for the last block's).
    """
    from pixelift.export import parity

    image, x = parity.parity_input(spec)
    ref = parity.run_torch(module, x)
    n = len(geometry)
    outs = _run_se(path, x, "cpu", geometry, 0.0)
    checks = [parity.compare("torch", ref, "onnxruntime-cpu-se-own", outs[0], image, threshold_db)]
    means = [outs[1 + k][0].reshape(-1) / outs[1 + n + k][0].reshape(-1) for k in range(n)]
    fed = _run_se(path, x, "cpu", geometry, 1.0, means)[0]
    checks.append(parity.compare("torch", ref, "onnxruntime-cpu-se-fed", fed, image, threshold_db))
    ov = parity.runtime_available("openvino")
    if ov:
        got = _run_se(path, x, "openvino", geometry, 0.0, options={"precision": "f32"})[0]
        checks.append(parity.compare("torch", ref, "openvino-cpu-f32-se-own", got, image, threshold_db))
    for k in range(n):
        file = stats[stats_file(k)]
        backends: list[tuple[str, str, dict[str, Any]]] = [("onnxruntime-cpu", "cpu", {})] + (
            [("openvino-cpu-f32", "openvino", {"precision": "f32"})] if ov and k == n - 1 else []
        )
        for label, provider, opts in backends:
            s_, c_ = _run_se(file, x, provider, geometry, 1.0, means, opts)
            got = s_[0].reshape(-1) / c_[0].reshape(-1)
            checks.append(_stats_check(f"{label}-stats-{k}", means[k], got, image, threshold_db))
    return checks
