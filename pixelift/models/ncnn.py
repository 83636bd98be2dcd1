"""Reader for ncnn ``.param``/``.bin`` pairs (text param format only).

Pure numpy: the registry uses it to count parameters without torch, and the
importers use it to fill PyTorch state dicts. The reader consumes the ``.bin``
exactly to its last byte; a short or over-long file raises ``WeightFormatError``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pixelift.errors import WeightFormatError

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_SCALED = 0x0002C056

ParamValue = int | float | list[int | float]


@dataclass(frozen=True)
class Layer:
    type: str
    name: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    params: dict[int, ParamValue] = field(default_factory=dict)

    def get(self, key: int, default: Any = 0) -> Any:
        """A param's value; which of :data:`ParamValue`'s types it is depends on the key
        (ncnn's per-layer-type schema), so the caller converts or checks it."""
        return self.params.get(key, default)


@dataclass(frozen=True)
class Graph:
    layers: tuple[Layer, ...]

    @property
    def input_blob(self) -> str:
        return next(lyr.tops[0] for lyr in self.layers if lyr.type == "Input")

    @property
    def output_blob(self) -> str:
        return self.layers[-1].tops[0]

    def of_type(self, *types: str) -> list[Layer]:
        return [lyr for lyr in self.layers if lyr.type in types]


def _number(text: str) -> int | float:
    if any(c in text for c in ".eE") and not text.lstrip("-").isdigit():
        return float(text)
    return int(text)


def parse_param(text: str, *, source: str = "<param>") -> Graph:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].strip() != str(MAGIC):
        raise WeightFormatError(f"{source}: not an ncnn text .param file (bad magic)")
    try:
        layer_count, _blob_count = (int(v) for v in lines[1].split())
    except (IndexError, ValueError) as exc:
        raise WeightFormatError(f"{source}: malformed header line") from exc
    layers: list[Layer] = []
    for lineno, line in enumerate(lines[2:], start=3):
        tok = line.split()
        try:
            ltype, name, nb, nt = tok[0], tok[1], int(tok[2]), int(tok[3])
            bottoms = tuple(tok[4 : 4 + nb])
            tops = tuple(tok[4 + nb : 4 + nb + nt])
            params: dict[int, ParamValue] = {}
            for kv in tok[4 + nb + nt :]:
                k_str, v_str = kv.split("=", 1)
                k = int(k_str)
                if k <= -23300:
                    items = v_str.split(",")
                    params[-k - 23300] = [_number(v) for v in items[1 : 1 + int(items[0])]]
                else:
                    params[k] = _number(v_str)
        except (IndexError, ValueError) as exc:
            raise WeightFormatError(f"{source}:{lineno}: malformed layer line") from exc
        if len(bottoms) != nb or len(tops) != nt:
            raise WeightFormatError(f"{source}:{lineno}: truncated layer line")
        layers.append(Layer(ltype, name, bottoms, tops, params))
    if len(layers) != layer_count:
        raise WeightFormatError(f"{source}: header says {layer_count} layers, file has {len(layers)}")
    return Graph(tuple(layers))


class _Reader:
    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.pos = 0
        self.source = source

    def _take(self, nbytes: int, what: str) -> bytes:
        if self.pos + nbytes > len(self.data):
            raise WeightFormatError(
                f"{self.source}: truncated .bin while reading {what} "
                f"(need {nbytes} bytes at offset {self.pos}, file has {len(self.data)})"
            )
        chunk = self.data[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return chunk

    def raw_fp32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self._take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        (tag,) = struct.unpack("<I", self._take(4, what))
        aligned = (count * 2 + 3) // 4 * 4
        if tag == TAG_FP16:
            raw = self._take(aligned, what)[: count * 2]
            return np.frombuffer(raw, dtype="<f2").astype(np.float32)
        if tag in (0, TAG_FP32_SCALED):
            return self.raw_fp32(count, what)
        if tag == TAG_INT8:
            raise WeightFormatError(f"{self.source}: {what} holds int8 weights; not supported")
        table = self.raw_fp32(256, what)
        idx = np.frombuffer(self._take((count + 3) // 4 * 4, what)[:count], dtype=np.uint8)
        return table[idx]


def _int(layer: Layer, key: int, default: int = 0) -> int:
    value = layer.get(key, default)
    if not isinstance(value, int):
        raise WeightFormatError(f"layer {layer.name}: param {key} is not an integer")
    return value


def read_bin(graph: Graph, data: bytes, *, source: str = "<bin>") -> dict[str, dict[str, np.ndarray]]:
    """Read every layer's weights, in layer order, as flat float32 arrays."""
    rd = _Reader(data, source)
    out: dict[str, dict[str, np.ndarray]] = {}
    for lyr in graph.layers:
        blobs: dict[str, np.ndarray] = {}
        what = f"layer {lyr.name}"
        if lyr.type in ("Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise"):
            if _int(lyr, 8) != 0:
                raise WeightFormatError(f"{source}: {what} is int8-quantized; not supported")
            blobs["weight"] = rd.tagged(_int(lyr, 6), what)
            if _int(lyr, 5):
                blobs["bias"] = rd.raw_fp32(_int(lyr, 0), what)
        elif lyr.type == "InnerProduct":
            if _int(lyr, 8) != 0:
                raise WeightFormatError(f"{source}: {what} is int8-quantized; not supported")
            blobs["weight"] = rd.tagged(_int(lyr, 2), what)
            if _int(lyr, 1):
                blobs["bias"] = rd.raw_fp32(_int(lyr, 0), what)
        elif lyr.type == "PReLU":
            blobs["slope"] = rd.raw_fp32(_int(lyr, 0), what)
        elif lyr.type == "MemoryData":
            n = max(_int(lyr, 0), 1) * max(_int(lyr, 1), 1) * max(_int(lyr, 2), 1) * max(_int(lyr, 11), 1)
            blobs["data"] = rd.raw_fp32(n, what)
        elif lyr.type == "Scale":
            n = _int(lyr, 0)
            if n != -233:  # -233: the scale comes from a second bottom blob, no weights
                blobs["scale"] = rd.raw_fp32(n, what)
                if _int(lyr, 1):
                    blobs["bias"] = rd.raw_fp32(n, what)
        elif lyr.type == "BatchNorm":
            n = _int(lyr, 0)
            for key in ("slope", "mean", "var", "bias"):
                blobs[key] = rd.raw_fp32(n, what)
        if blobs:
            out[lyr.name] = blobs
    if rd.pos != len(data):
        raise WeightFormatError(
            f"{source}: {len(data) - rd.pos} trailing bytes after the last weight; the .bin does not match its .param"
        )
    return out


def count_params(graph: Graph) -> int:
    """Number of weights the graph declares, from the .param alone."""
    total = 0
    for lyr in graph.layers:
        if lyr.type in ("Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise"):
            total += _int(lyr, 6) + (_int(lyr, 0) if _int(lyr, 5) else 0)
        elif lyr.type == "InnerProduct":
            total += _int(lyr, 2) + (_int(lyr, 0) if _int(lyr, 1) else 0)
        elif lyr.type == "PReLU":
            total += _int(lyr, 0)
        elif lyr.type == "Scale" and _int(lyr, 0) != -233:
            total += _int(lyr, 0) * (2 if _int(lyr, 1) else 1)
    return total


@dataclass(frozen=True)
class NcnnModel:
    """A parsed ``.param`` with its weights, keyed by layer name."""

    graph: Graph
    weights: dict[str, dict[str, np.ndarray]]
    param_path: Path
    bin_path: Path

    def layers(self, *types: str) -> list[Layer]:
        return self.graph.of_type(*types)


def load(param_path: Path, bin_path: Path) -> NcnnModel:
    for p in (param_path, bin_path):
        if not p.is_file():
            raise WeightFormatError(f"missing weight file: {p}")
    graph = parse_param(param_path.read_text(encoding="utf-8", errors="strict"), source=str(param_path))
    weights = read_bin(graph, bin_path.read_bytes(), source=str(bin_path))
    return NcnnModel(graph, weights, param_path, bin_path)


@dataclass(frozen=True)
class Contract:
    """How an original ncnn graph meets the :class:`~pixelift.models.spec.ModelSpec` contract:
    the input is reflect-padded by ``border`` on each side, run, and the output centre-cropped
    to ``scale`` times the unpadded size; ``residual="nearest"`` (Real-CUGAN x4) adds the
    nearest-upsampled input, which the original app does in a shader."""

    scale: int
    border: int = 0
    residual: str | None = None

    def __post_init__(self) -> None:
        if self.scale < 1 or self.border < 0 or self.residual not in (None, "nearest"):
            raise ValueError(f"bad ncnn contract: {self}")

    def apply(self, run: Callable[[np.ndarray], np.ndarray], chw: np.ndarray) -> np.ndarray:
        """``run`` (one CHW float32 image through the graph) under the contract."""
        b, s = self.border, self.scale
        _, h, w = chw.shape
        padded = np.pad(chw, ((0, 0), (b, b), (b, b)), mode="reflect") if b else chw
        out = run(np.ascontiguousarray(padded, dtype=np.float32))
        oh, ow = h * s, w * s
        top, left = (out.shape[1] - oh) // 2, (out.shape[2] - ow) // 2
        if top < 0 or left < 0:
            raise WeightFormatError(f"ncnn output {out.shape} is smaller than {oh}x{ow}: the contract does not fit")
        out = out[:, top : top + oh, left : left + ow]
        if self.residual == "nearest":
            out = out + chw.repeat(s, axis=1).repeat(s, axis=2)
        return out
