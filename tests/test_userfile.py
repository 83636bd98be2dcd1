"""User weight files: spandrel-detected .pth/.safetensors, loaded safely, exported and verified."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pixelift import models
from pixelift.cli import main
from pixelift.errors import ModelNotFoundError, UnknownArchitectureError, UnsafeWeightsError, WeightFormatError
from pixelift.export import find, to_onnx
from pixelift.metrics import psnr
from pixelift.models.importers import build_torch
from pixelift.models.importers.userfile import load_state_dict, spec_from_file
from pixelift.models.sources import NcnnPackageSource
from pixelift.samples import photo_crop, to_chw

FAMILIES = [
    pytest.param("realesrgan-x4plus-anime", "ESRGAN", marks=pytest.mark.slow),
    pytest.param("realesrgan-animevideov3-x4", "Compact"),
    pytest.param("span-x2-ch48", "SPAN"),
]


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, str(path))


def _run(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize(("zoo_id", "arch"), FAMILIES)
def test_state_dict_from_zoo_reimports_and_exports(tmp_path: Path, zoo_id: str, arch: str, suffix: str) -> None:
    """A zoo model saved as a plain state dict comes back through spandrel identical (>= 100 dB)."""
    zoo_module = build_torch(models.get(zoo_id))
    path = tmp_path / f"mine{suffix}"
    _save(zoo_module.state_dict(), path)
    model_id = f"user-{arch.lower()}-{suffix[1:]}"
    result = CliRunner().invoke(main, ["export", str(path), "--id", model_id, "--json"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip().splitlines()[-1])
    assert line["status"] == "ok" and line["id"] == model_id
    spec = models.get(model_id)
    assert spec.architecture == arch and spec.scale == models.get(zoo_id).scale
    art = find(model_id, "onnx-fp32")
    assert art is not None and art.parity_passed
    assert {(c["reference"], c["candidate"]) for c in art.manifest["parity"]["checks"]} == {
        ("torch", "onnxruntime-cpu"),
        ("torch", "openvino-cpu-f32"),
    }
    x = to_chw(photo_crop(40, 36))[None]
    assert psnr(_run(build_torch(spec), x), _run(zoo_module, x)) >= 100


class Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (Path(EVIL_MARKER),))


EVIL_MARKER = "/tmp/pixelift-evil-marker"


def test_pickle_that_is_not_weights_only_is_refused_and_never_run(tmp_path: Path) -> None:
    Path(EVIL_MARKER).unlink(missing_ok=True)
    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        pickle.dump({"conv.weight": Evil()}, f)
    with pytest.raises(UnsafeWeightsError, match="weights_only"):
        load_state_dict(path)
    result = CliRunner().invoke(main, ["export", str(path), "--id", "evil"])
    assert result.exit_code == 1 and "refused" in result.output
    assert not Path(EVIL_MARKER).exists()
    assert find("evil", "onnx-fp32") is None


def test_unknown_architecture_and_corrupt_files(tmp_path: Path) -> None:
    odd = tmp_path / "odd.safetensors"
    _save({"foo.weight": torch.zeros(3, 3)}, odd)
    with pytest.raises(UnknownArchitectureError, match="does not recognise"):
        spec_from_file(odd, "odd")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightFormatError):
        spec_from_file(junk, "junk")
    trunc = tmp_path / "trunc.pth"
    _save(build_torch(models.get("span-x2-ch48")).state_dict(), trunc)
    trunc.write_bytes(trunc.read_bytes()[:1000])
    with pytest.raises(WeightFormatError):
        spec_from_file(trunc, "trunc")
    result = CliRunner().invoke(main, ["export", str(odd), "--id", "odd"])
    assert result.exit_code == 1
    assert find("odd", "onnx-fp32") is None
    with pytest.raises(ModelNotFoundError):
        models.get("odd")


def test_truncated_zoo_bin_leaves_no_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A corrupt ncnn package fails the export loudly and writes nothing to the cache."""
    from dataclasses import replace

    src = models.get("realesrgan-animevideov3-x4").sources[0]
    param, binf = src.files()
    pkg = tmp_path / "fakeweights" / "models"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    shutil.copy(param, pkg / "M.param")
    (pkg / "M.bin").write_bytes(binf.read_bytes()[:-4096])
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = replace(
        models.get("realesrgan-animevideov3-x4"),
        id="broken-compact",
        sources=(NcnnPackageSource("fakeweights", "fakeweights", "models/M"),),
    )
    with pytest.raises(WeightFormatError, match="truncated"):
        to_onnx(spec)
    assert find("broken-compact", "onnx-fp32") is None


def test_export_from_loopback_url(tmp_path: Path, serve_dir: Callable[[Path], str]) -> None:
    path = tmp_path / "served.safetensors"
    _save(build_torch(models.get("span-x2-ch48")).state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    url = f"{serve_dir(tmp_path)}/served.safetensors"
    bad = CliRunner().invoke(main, ["export", url, "--id", "url-span", "--sha256", "0" * 64])
    assert bad.exit_code == 1 and "sha256" in bad.output
    assert find("url-span", "onnx-fp32") is None
    ok = CliRunner().invoke(main, ["export", url, "--id", "url-span", "--sha256", digest])
    assert ok.exit_code == 0, ok.output
    spec = models.get("url-span")
    assert spec.sources[0].kind == "url" and spec.sources[0].sha256 == digest


def test_export_targets_are_told_apart(tmp_path: Path) -> None:
    """A path without a suffix, a folder, a missing file, another URL scheme and an unknown id
    each get their own answer; a local file whose --sha256 differs is refused before it is read."""
    noext = tmp_path / "weights"
    _save(build_torch(models.get("span-x2-ch48")).state_dict(), tmp_path / "w.safetensors")
    noext.write_bytes(b"x")
    cases = [
        ([str(noext)], 1, "unsupported weight file type"),
        ([str(tmp_path)], 1, "is a folder"),
        ([str(tmp_path / "missing")], 1, "not found"),
        (["ftp://host/w.pth"], 2, "ftp:// URLs are not supported"),
        (["no-such-model"], 2, "unknown model"),
        (["span-x2-ch48", "ftp://host/w.pth"], 2, "ftp://"),  # refused before the first target runs
        ([str(tmp_path / "w.safetensors"), "--id", "w-sha", "--sha256", "0" * 64], 1, "sha256 does not match"),
    ]
    for args, code, said in cases:
        res = CliRunner().invoke(main, ["export", *args])
        assert res.exit_code == code and said in res.output, (args, res.output)
    assert find("w-sha", "onnx-fp32") is None


def test_a_junk_pickle_is_that_targets_error_and_the_batch_goes_on(tmp_path: Path) -> None:
    junk = tmp_path / "w.pth"
    junk.write_bytes(b"junk\n")  # torch.load failed with a KeyError: "internal error", and the batch stopped
    res = CliRunner().invoke(main, ["export", str(junk), str(tmp_path / "missing.pth"), "--json"])
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert res.exit_code == 1 and [r["status"] for r in records] == ["error", "error"], res.output
    assert "not a readable PyTorch weights file" in records[0]["error"] and "not found" in records[1]["error"]
