"""The layout holds: no import cycle inside pixelift, the runtime never imports the export
stage, and the torch-free layers never import torch (read from the source, lazy imports included)."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from pixelift.errors import ProviderOptionError
from pixelift.providers import ProbeResult, ProviderOptions, Role
from pixelift.providers.options import choice, parse

ROOT = Path(__file__).resolve().parents[1] / "pixelift"
TORCH_FREE = ("pixelift.artifacts", "pixelift.runtime", "pixelift.providers", "pixelift.ids", "pixelift.limits")
HEAVY = ("torch", "torchvision", "spandrel", "onnx", "onnxslim", "nncf")


def _modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, at module level or inside functions; ``from a import b``
    counts as importing ``a.b`` when that is a module, else ``a``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                full = f"{base}.{a.name}"
                found.add(full if full in MODULES else base)
    return found


GRAPH = {name: {m for m in _imports(name, path) if m in MODULES and m != name} for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read() -> None:
    # the walk must see the edges it is meant to police, or every check below passes vacuously
    assert "pixelift.artifacts" in GRAPH["pixelift.runtime.session"]  # from pixelift.artifacts import ...
    assert "pixelift.export.onnx_fp32" in GRAPH["pixelift.export"]  # a relative or absolute submodule
    assert "pixelift.providers" in GRAPH["pixelift.precision"]  # imported inside functions only
    assert "pixelift.providers.table" in GRAPH["pixelift.precision"]  # from a module: the module itself
    assert set(MODULES) >= {"pixelift", "pixelift.runtime.session", "pixelift.providers.options"}


def test_lazy_and_relative_imports_are_seen(tmp_path: Path) -> None:
    """An import hidden in a function, or written relative, is an import all the same."""
    pkg = tmp_path / "pixelift" / "runtime"
    pkg.mkdir(parents=True)
    mod = pkg / "sneaky.py"
    mod.write_text("def f():\n    import torch\n    from ..export import onnx_fp32\n    from . import tiling\n")
    got = _imports("pixelift.runtime.sneaky", mod)
    assert {"torch", "pixelift.export.onnx_fp32", "pixelift.runtime.tiling"} <= got


def test_no_import_cycles() -> None:
    assert _cycles() == []


def test_the_cycle_finder_finds_cycles() -> None:
    saved = {k: set(v) for k, v in GRAPH.items()}
    try:
        GRAPH["pixelift.ids"].add("pixelift.limits")
        GRAPH["pixelift.limits"].add("pixelift.ids")
        assert ["pixelift.ids", "pixelift.limits"] in _cycles()
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


@pytest.mark.parametrize("layer", TORCH_FREE)
def test_torch_free_layers_import_no_export_and_no_torch(layer: str) -> None:
    offenders = []
    for name, path in MODULES.items():
        if name != layer and not name.startswith(layer + "."):
            continue
        for imported in _imports(name, path):
            if imported.startswith("pixelift.export") or imported.split(".")[0] in HEAVY:
                offenders.append(f"{name} imports {imported}")
    assert offenders == []


class _FakeSession:
    provider = "fake-npu"
    input_names = ("input",)
    output_names = ("output",)

    def __init__(self, scale: int) -> None:
        self.scale = scale

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(x, self.scale, axis=2), self.scale, axis=3)

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [self.run(feeds["input"])]


@dataclass(frozen=True)
class _FakeOptions(ProviderOptions):
    provider: ClassVar[str] = "fake-npu"
    device: str = choice("NPU0", ("NPU0",))  # a provider with devices takes a device option


class _FakeProvider:
    name = "fake-npu"
    role = Role.ACCELERATOR
    devices: tuple[str, ...] = ("NPU0",)
    accelerator_devices: tuple[str, ...] = ()
    options_type: type[ProviderOptions] = _FakeOptions
    suffixes: tuple[str, ...] = (".onnx",)

    def __init__(self) -> None:
        self.opened_with: list[_FakeOptions] = []

    def probe(self, facts: object) -> ProbeResult:
        return ProbeResult(True, "a fake accelerator for the tests", ("NPU0",))

    def open(self, model_path: Path, options: ProviderOptions | None = None) -> _FakeSession:
        self.opened_with.append(parse(_FakeOptions, options))
        return _FakeSession(2)


def test_a_provider_added_to_the_table_alone_is_everywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One row in the provider table: doctor lists it, --provider accepts it, auto selects it."""
    from click.testing import CliRunner
    from PIL import Image

    from pixelift import Enhancer
    from pixelift.cli import main
    from pixelift.export import to_onnx
    from pixelift.providers import PROVIDERS, Request, plan, probe_all, provider_choices, provider_options
    from pixelift.runtime.session import clear_cache
    from pixelift.samples import sample_photo

    to_onnx("span-x2-ch48")
    fake = _FakeProvider()
    monkeypatch.setitem(PROVIDERS, fake.name, fake)
    clear_cache()
    try:
        assert {"fake-npu", "fake-npu:NPU0"} <= set(provider_choices())
        res = CliRunner().invoke(main, ["doctor", "--json"])
        assert json.loads(res.stdout)["providers"]["fake-npu"]["available"] is True
        enh = Enhancer("span-x2-ch48")  # auto: an available accelerator ranks first
        enh.enhance(sample_photo()[:16, :16])
        assert enh.loaded()[0].provider == "fake-npu"
        # its declared options reach it, typed, and nothing else does
        assert enh.loaded()[0].selection.options == _FakeOptions() and fake.opened_with[-1] == _FakeOptions()
        named = plan(Request("fake-npu:NPU0", strict=True), probe_all()).candidates
        assert [(c.label, c.options) for c in named] == [("fake-npu:NPU0", _FakeOptions("NPU0"))]
        with pytest.raises(ProviderOptionError, match=r"fake-npu has no option threads; it accepts: device"):
            provider_options("fake-npu", {"threads": 2})
        src = tmp_path / "a.png"
        Image.fromarray(sample_photo()[:16, :16]).save(src)
        res = CliRunner().invoke(
            main, ["enhance", str(src), "--provider", "fake-npu", "--json", "-o", str(tmp_path / "o.png")]
        )
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout.splitlines()[-1])["provider"] == ["fake-npu"]
    finally:
        clear_cache()
        monkeypatch.undo()  # the row is gone: so is the choice
    res = CliRunner().invoke(main, ["enhance", str(src), "--provider", "fake-npu"])
    assert res.exit_code == 2 and "unknown provider" in res.output
