"""A warm start repeats no work, and never trusts a changed file: the verified-file stamp and
the first-run stamp."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pixelift.artifacts import store
from pixelift.errors import DamagedArtifactError
from pixelift.providers import PROVIDERS, select
from pixelift.providers.select import Request


def _publish(tmp_path: Path, data: bytes) -> store.Artifact:
    f = tmp_path / "m.bin"
    f.write_bytes(data)
    return store.publish("stamp-model", "onnx-fp32", f, {"file": "m.bin", "spec": {"id": "stamp-model"}})


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    seen: list[Path] = []
    real = store.sha256_tree

    def counting(path: Path) -> str:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(store, "sha256_tree", counting)
    return seen


def test_a_verified_file_is_hashed_once_until_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    art = _publish(tmp_path, os.urandom(1 << 16))
    hashed = _count_hashes(monkeypatch)
    art.verify()
    art.verify()
    store.find("stamp-model", "onnx-fp32").verify()  # type: ignore[union-attr]
    assert hashed == [art.path]  # the first verify hashes; the others trust the unchanged file
    # same size, same mtime, other bytes: ctime moves, so the stamp misses and the change is caught
    st = art.path.stat()
    data = bytearray(art.path.read_bytes())
    data[100] ^= 0xFF
    art.path.write_bytes(bytes(data))
    os.utime(art.path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DamagedArtifactError, match="sha256 does not match"):
        art.verify()
    assert len(hashed) == 2


def test_a_read_only_stamp_folder_only_costs_a_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    art = _publish(tmp_path, b"x" * 4096)
    monkeypatch.setattr("pixelift.stamps.writable", lambda sub: Path("/proc/no-such-place") / sub)
    hashed = _count_hashes(monkeypatch)
    art.verify()
    art.verify()
    assert len(hashed) == 2  # nothing remembered, nothing wrong


class _Session:
    input_names = ("input",)
    output_names = ("output",)

    def __init__(self, out: np.ndarray) -> None:
        self.out, self.calls = out, 0

    def run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.out


def test_a_passed_first_run_is_remembered_but_a_failing_backend_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"graph")
    x = np.full((1, 3, 8, 8), 0.5, np.float32)
    good = np.zeros((1, 3, 16, 16), np.float32)
    opened: list[_Session] = []

    def open_ok(path: Path, options: object = None) -> _Session:
        opened.append(_Session(good))
        return opened[-1]

    monkeypatch.setattr(PROVIDERS["cpu"], "open", open_ok)
    for _ in range(3):
        sel = select.open_session(model, Request(provider="cpu", strict=True), probe_input=x, scale=2)
        assert sel.provider == "cpu"
    assert [s.calls for s in opened] == [1, 0, 0]  # checked once, then trusted
    model.write_bytes(b"graph, rebuilt")  # another graph: checked again
    select.open_session(model, Request(provider="cpu", strict=True), probe_input=x, scale=2)
    assert opened[-1].calls == 1

    class _NaNSession(_Session):
        pass

    def open_nan(path: Path, options: object = None) -> _Session:
        return _NaNSession(np.full((1, 3, 16, 16), np.nan, np.float32))

    # a backend that now misbehaves is another session class: its first run is checked, and fails
    monkeypatch.setattr(PROVIDERS["cpu"], "open", open_nan)
    with pytest.raises(select.ProviderError, match="first run produced NaN"):
        select.open_session(model, Request(provider="cpu", strict=True), probe_input=x, scale=2)


def test_probes_are_kept_for_the_process_and_follow_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    first = select.probe_all()
    calls: list[str] = []
    real = type(PROVIDERS["cpu"]).probe

    def probe(self: object, facts: object) -> object:
        calls.append("cpu")
        return real(self, facts)  # type: ignore[arg-type]

    assert select.probe_all() == first
    monkeypatch.setattr(type(PROVIDERS["cpu"]), "probe", probe)  # a faked probe is probed anew
    select.probe_all()
    select.probe_all()
    assert calls == ["cpu"]
