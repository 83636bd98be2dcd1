"""Portable artifact bundles across two PIXELIFT_HOMEs, a runtime without torch, and a read-only cache."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pixelift import models
from pixelift.artifacts import ONNX_FP32, find, publish
from pixelift.artifacts.bundle import BundleError, install, pack
from pixelift.cli import main
from pixelift.export import to_onnx

MODEL = "span-x2-ch48"

RUN_WITHOUT_TORCH = (
    "import sys, json\n"
    "for n in ('torch', 'spandrel', 'onnx', 'onnxslim', 'ncnn'):\n"
    "    sys.modules[n] = None\n"
    "import numpy as np\n"
    "from pixelift import Enhancer\n"
    "from pixelift.samples import sample_photo\n"
    "out = Enhancer(sys.argv[1], provider='cpu', precision=sys.argv[2]).enhance(sample_photo()[:24, :40])\n"
    "np.save(sys.argv[3], out)\n"
)


def _run(code: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def other_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "laptop"
    home.mkdir()
    return home


def _user_model(home_model_id: str = "my-span") -> None:
    """A user model (its own spec file) whose artifact is the span export under another id."""
    from pixelift.models.spec import ModelSpec

    art = to_onnx(MODEL)
    spec = ModelSpec.from_dict({**dict(art.manifest.spec), "id": home_model_id})
    copy = art.path.parent.parent / "copy.onnx"
    shutil.copy(art.path, copy)
    publish(home_model_id, ONNX_FP32, copy, {"file": "model.onnx", "spec": spec.to_dict(), "parity": {"passed": True}})
    models.save_user_spec(spec)


@pytest.mark.slow
def test_pack_install_and_run_without_torch(tmp_path: Path, other_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    to_onnx(MODEL)
    _user_model()
    bundle = tmp_path / "models.pxb"
    args = ["artifacts", "pack", MODEL, "my-span", "-o", str(bundle), "--json", "--target", "onnx-fp32"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout)["artifacts"]) == {f"{MODEL}/onnx-fp32", "my-span/onnx-fp32"}
    ref = tmp_path / "ref.npy"
    env = {**os.environ}
    made = _run(RUN_WITHOUT_TORCH, MODEL, "fp32", str(ref), env=env)
    assert made.returncode == 0, made.stderr

    monkeypatch.setenv("PIXELIFT_HOME", str(other_home))
    assert find(MODEL, ONNX_FP32) is None
    res = CliRunner().invoke(main, ["artifacts", "install", str(bundle), "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)["installed"]) == 2
    art = find(MODEL, ONNX_FP32)
    assert art is not None
    art.verify()
    assert models.get("my-span").id == "my-span"  # the user spec came along
    res = CliRunner().invoke(main, ["artifacts", "install", str(bundle), "--json"])  # again: nothing to do
    assert res.exit_code == 0 and json.loads(res.stdout)["installed"] == []

    env = {**os.environ, "PIXELIFT_HOME": str(other_home)}
    for model_id, name in ((MODEL, "a.npy"), ("my-span", "b.npy")):
        proc = _run(RUN_WITHOUT_TORCH, model_id, "fp32", str(tmp_path / name), env=env)
        assert proc.returncode == 0, proc.stderr
        assert np.array_equal(np.load(tmp_path / name), np.load(ref))


def _tar_with(path: Path, members: dict[str, bytes], index: dict[str, object] | None = None) -> Path:
    with tarfile.open(path, "w") as tar:
        if index is not None:
            members = {"bundle.json": json.dumps(index).encode(), **members}
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_tampered_bundle_installs_nothing(tmp_path: Path, other_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    to_onnx(MODEL)
    bundle = tmp_path / "b.pxb"
    pack([MODEL], bundle)
    raw = bytearray(bundle.read_bytes())
    with tarfile.open(bundle) as tar:
        member = tar.getmember(f"artifacts/{MODEL}/onnx-fp32/model.onnx")
        at = member.offset_data + member.size // 2
    raw[at] ^= 0xFF
    bad = tmp_path / "bad.pxb"
    bad.write_bytes(bytes(raw))
    monkeypatch.setenv("PIXELIFT_HOME", str(other_home))
    with pytest.raises(BundleError, match="does not match its sha256"):
        install(bad)
    assert find(MODEL, ONNX_FP32) is None
    res = CliRunner().invoke(main, ["artifacts", "install", str(bad)])
    assert res.exit_code == 1 and "sha256" in res.output and "Traceback" not in res.output
    truncated = tmp_path / "trunc.pxb"
    truncated.write_bytes(bundle.read_bytes()[: len(raw) // 3])
    with pytest.raises(BundleError, match=r"damaged or truncated bundle.*nothing installed"):
        install(truncated)
    assert find(MODEL, ONNX_FP32) is None
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    res = CliRunner().invoke(main, ["artifacts", "install", str(photo)])  # not a bundle at all: one line
    assert res.exit_code == 1 and "not a pixelift bundle" in res.output and len(res.output.splitlines()) == 1


SHA = "0" * 64


@pytest.mark.parametrize(
    ("members", "index", "match"),
    [
        ({"../evil": b"x"}, {"schema": 1, "artifacts": []}, "unexpected member"),
        ({}, {"schema": 1, "artifacts": [{"model_id": "../x", "target": "onnx-fp32", "files": {}}]}, "model id"),
        ({}, {"schema": 1, "artifacts": [{"model_id": "a", "target": "evil", "files": {}}]}, "unknown target"),
        ({}, {"schema": 1, "artifacts": [{"model_id": "a", "target": "onnx-fp32", "files": {"../m": SHA}}]}, "unsafe"),
        (
            {},
            {"schema": 1, "artifacts": [{"model_id": "a", "target": "onnx-fp32", "files": {"/etc/x": SHA}}]},
            "unsafe",
        ),
        ({}, {"schema": 99, "artifacts": []}, "schema"),
        ({}, None, "not a pixelift bundle"),
        ({}, {"schema": 1, "artifacts": [{"model_id": "a", "target": "onnx-fp32", "files": {"m": SHA}}]}, "missing"),
        ({}, {"schema": 1, "artifacts": [], "user_specs": {"span-x2-ch48": {}}}, "the spec of span-x2-ch48 is invalid"),
        (
            {},
            {"schema": 1, "artifacts": [], "user_specs": {"span-x2-ch48": models.get("span-x2-ch48").to_dict()}},
            "user spec 'span-x2-ch48' names 'span-x2-ch48' or a built-in model; refused",
        ),
    ],
)
def test_unsafe_bundles_are_refused(
    members: dict[str, bytes],
    index: dict[str, object] | None,
    match: str,
    tmp_path: Path,
    other_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIXELIFT_HOME", str(other_home))
    bundle = _tar_with(tmp_path / "x.pxb", members, index)
    if index is not None and "user_specs" in index:  # the spec member must exist for the spec check
        bundle = _tar_with(tmp_path / "x.pxb", {"models/span-x2-ch48.json": b"{}"}, index)
    with pytest.raises(BundleError, match=match):
        install(bundle)
    assert not (other_home / "artifacts" / "a").exists() and not (tmp_path / "evil").exists()


def test_symlink_member_is_refused(tmp_path: Path, other_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXELIFT_HOME", str(other_home))
    index = {"schema": 1, "artifacts": [{"model_id": "a", "target": "onnx-fp32", "files": {"model.onnx": SHA}}]}
    bundle = tmp_path / "l.pxb"
    with tarfile.open(bundle, "w") as tar:
        data = json.dumps(index).encode()
        info = tarfile.TarInfo("bundle.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("artifacts/a/onnx-fp32/model.onnx")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(BundleError, match="not a plain file"):
        install(bundle)


READ_ONLY_RUN = (
    "import os, sys, pathlib\n"
    "home = os.environ['PIXELIFT_HOME']\n"
    "import pixelift.artifacts.store as S\n"
    "real_access = os.access\n"
    "os.access = lambda p, m, **k: False if str(p).startswith(home) and m & os.W_OK else real_access(p, m, **k)\n"
    "def refuse(*a, **k):\n"
    "    raise OSError(30, 'Read-only file system')\n"
    "S.update_manifest = refuse\n"
    "import pixelift.precision as P\n"
    "P.update_manifest = refuse\n"
    "import logging\n"
    "logging.basicConfig(level=logging.WARNING)\n"
    "calls = []\n"
    "real_measure = P.measure\n"
    "P.measure = lambda *a, **k: calls.append(1) or real_measure(*a, **k)\n"
    "from pixelift import Enhancer\n"
    "from pixelift.samples import sample_photo\n"
    "Enhancer(sys.argv[1], provider='openvino', precision='auto').enhance(sample_photo()[:24, :40])\n"
    "print('measured', len(calls))\n"
)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="runs the openvino rows (the openvino extra)")
def test_read_only_cache_measures_once(tmp_path: Path, other_home: Path) -> None:
    """A cache nobody may write (simulated: this suite runs as root, which ignores file modes)
    keeps its measurements in the state folder, so the second run measures nothing and warns nothing."""
    to_onnx(MODEL)
    bundle = tmp_path / "b.pxb"
    pack([MODEL], bundle, targets=["onnx-fp32"])
    env = {**os.environ, "PIXELIFT_HOME": str(other_home), "PIXELIFT_STATE": str(tmp_path / "state")}
    proc = _run(
        "import sys; from pixelift.artifacts.bundle import install; from pathlib import Path; install(Path(sys.argv[1]))",
        str(bundle),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    # as if exported on another machine: no fidelity records for this one
    mf = other_home / "artifacts" / MODEL / "onnx-fp32" / "manifest.json"
    body = json.loads(mf.read_text())
    body.pop("fidelity", None)
    mf.write_text(json.dumps(body))
    first = _run(READ_ONLY_RUN, MODEL, env=env)
    assert first.returncode == 0, first.stderr
    assert int(first.stdout.split()[-1]) > 0
    assert list((tmp_path / "state" / "measurements").glob("*.json"))
    second = _run(READ_ONLY_RUN, MODEL, env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split()[-1] == "0", second.stdout
    assert "WARNING" not in second.stderr, second.stderr


def test_a_bundle_installs_all_or_nothing(tmp_path: Path, other_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An id named twice is packed once; a bundle listing one artifact twice is refused; one whose second
    artifact does not verify against its own manifest installs not even the first (all verify first)."""
    to_onnx(MODEL)
    good = tmp_path / "g.pxb"
    assert len(pack([MODEL, MODEL], good)) == len(pack([MODEL], tmp_path / "once.pxb"))
    with tarfile.open(good) as tar:
        index = json.loads(tar.extractfile("bundle.json").read())  # type: ignore[union-attr]
        members = {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.name != "bundle.json"
        }
    first = index["artifacts"][0]
    twice = tmp_path / "twice.pxb"
    _tar_with(twice, members, {**index, "artifacts": [first, first]})
    # the same files under another id: their manifest names MODEL, so this entry cannot verify
    prefix = f"artifacts/{MODEL}/{first['target']}/"
    copied = {f"artifacts/zz-copy/{first['target']}/{k[len(prefix):]}": v for k, v in members.items() if k.startswith(prefix)}
    mixed = tmp_path / "mixed.pxb"
    _tar_with(mixed, {**members, **copied}, {**index, "artifacts": [*index["artifacts"], {**first, "model_id": "zz-copy"}]})
    monkeypatch.setenv("PIXELIFT_HOME", str(other_home))
    with pytest.raises(BundleError, match="twice"):
        install(twice)
    with pytest.raises(BundleError, match=r"zz-copy/.*nothing installed"):
        install(mixed)
    assert find(MODEL, first["target"]) is None and find("zz-copy", first["target"]) is None
    assert len(install(good)) == len(index["artifacts"])


def test_pack_refusals_and_warnings(tmp_path: Path, other_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXELIFT_HOME", str(tmp_path / "fp32-only"))  # a cache where no int8 was built
    to_onnx(MODEL)
    run = CliRunner().invoke
    for args, code, said in (
        (["nope"], 2, "unknown model"),
        (["../x"], 2, "MODEL_IDS"),
        ([MODEL, "-o", str(tmp_path), "--overwrite"], 1, "is a folder"),
        ([MODEL, "-o", str(tmp_path / "missing" / "dir" / "b.pxb")], 0, ""),  # its folder is made
    ):
        res = run(main, ["artifacts", "pack", *args, *([] if "-o" in args else ["-o", str(tmp_path / "x.pxb")])])
        assert res.exit_code == code and said in res.output and "internal error" not in res.output, (args, res.output)
    res = run(main, ["artifacts", "pack", MODEL, "--precision", "int8", "-o", str(tmp_path / "i.pxb")])
    assert res.exit_code == 0 and f"{MODEL} has no int8 artifact" in res.output  # asked for, absent: said
    monkeypatch.setenv("PIXELIFT_HOME", str(other_home))
    assert "installed 1" in run(main, ["artifacts", "install", str(tmp_path / "i.pxb")]).output
    assert "already in" in run(main, ["artifacts", "install", str(tmp_path / "i.pxb")]).output
