"""URL weight sources: downloads are verified by sha256 against a loopback server or file://."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from pixelift.errors import ChecksumError, WeightSourceError
from pixelift.models.sources import LocalFileSource, UrlSource

PAYLOAD = b"pretend weights " * 1000
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(tmp_path: Path, serve_dir: Callable[[Path], str]) -> str:
    (tmp_path / "w.pth").write_bytes(PAYLOAD)
    return serve_dir(tmp_path)


def test_http_download_is_verified_and_cached(server: str) -> None:
    src = UrlSource(f"{server}/w.pth", DIGEST)
    (path,) = src.files()
    assert path.read_bytes() == PAYLOAD and path == src.cache_path
    path.write_bytes(b"tampered")  # a corrupted cache entry is replaced, not used
    (again,) = src.files()
    assert again.read_bytes() == PAYLOAD


def test_sha256_mismatch_keeps_nothing(server: str) -> None:
    src = UrlSource(f"{server}/w.pth", "0" * 64)
    with pytest.raises(
        ChecksumError, match=f"sha256 mismatch \\(expected {'0' * 64}, got {DIGEST}\\); the file was not kept"
    ):
        src.files()
    assert not src.cache_path.exists()
    assert not list(src.cache_path.parent.glob("*.part"))


def test_file_url_and_http_404(tmp_path: Path, server: str) -> None:
    f = tmp_path / "local.pth"
    f.write_bytes(PAYLOAD)
    (path,) = UrlSource(f.as_uri(), DIGEST, "local2.pth").files()
    assert path.read_bytes() == PAYLOAD
    other = "ab" * 32  # a digest no earlier download used: its weights/<sha256>/ folder is new
    with pytest.raises(WeightSourceError, match=r"download of .*/missing\.pth failed: HTTP Error 404"):
        UrlSource(f"{server}/missing.pth", other, "missing.pth").files()
    assert not UrlSource(f"{server}/missing.pth", other, "missing.pth").cache_path.parent.exists()


def test_bad_url_specs_are_rejected() -> None:
    with pytest.raises(WeightSourceError, match="64 hex"):
        UrlSource("http://127.0.0.1/x", "abc")
    with pytest.raises(WeightSourceError, match="scheme"):
        UrlSource("ftp://127.0.0.1/x", DIGEST)


def test_local_file_checksum(tmp_path: Path) -> None:
    f = tmp_path / "w.pth"
    f.write_bytes(PAYLOAD)
    assert LocalFileSource(str(f), DIGEST).files() == (f,)
    with pytest.raises(ChecksumError, match=f"sha256 does not match the expected {'1' * 64}"):
        LocalFileSource(str(f), "1" * 64).files()
    with pytest.raises(WeightSourceError, match="not found"):
        LocalFileSource(str(tmp_path / "nope.pth")).files()
