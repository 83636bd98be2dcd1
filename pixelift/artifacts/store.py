"""The artifact store: one folder per (model, target), holding the file(s) and a manifest.

Layout: ``$PIXELIFT_HOME/artifacts/<model-id>/<target>/{model.onnx | model.xml + .bin |
model.mlpackage/, manifest.json}``. Torch-free.

* **Ids:** the model id and the target pass :func:`pixelift.ids.validate_id` and the
  folder must resolve inside the artifacts folder, so no id can name a path elsewhere.
* **Publishing** holds a per-artifact inter-process lock (:func:`artifact_lock`, a
  ``filelock`` lock file under ``artifacts/.locks``): the folder is built beside its
  final place and swapped in; leftovers of killed publishes are removed by the next one.
* **Readers** that find the artifact missing or inconsistent while a publish holds the
  lock wait for it and read again, so they never act on a half-swapped folder.
* **Damage** (an unreadable manifest, a file that does not hash to its record) makes an
  artifact count as missing, with a warning naming the file; the builder replaces it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock

from pixelift import stamps
from pixelift.artifacts.manifest import MANIFEST, Manifest
from pixelift.artifacts.targets import get_target
from pixelift.errors import ArtifactBusyError, DamagedArtifactError, InvalidIdError
from pixelift.ids import inside, validate_id
from pixelift.logs import EVENT
from pixelift.paths import artifacts_dir, sha256_file

log = logging.getLogger(__name__)

LOCKS = ".locks"
#: how long a reader or a second builder waits for another process's publish or build
LOCK_TIMEOUT_S = 3600.0


def sha256_tree(path: Path) -> str:
    """sha256 of a file, or of a directory (an ``.mlpackage``): its relative paths and
    contents in sorted order, so the same tree hashes the same anywhere."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def tree_size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass(frozen=True)
class Artifact:
    model_id: str
    target: str
    path: Path
    manifest: Manifest

    @property
    def sha256(self) -> str:
        return self.manifest.sha256

    @property
    def parity_passed(self) -> bool:
        return self.manifest.parity_passed

    def verify(self) -> None:
        """Re-hash the main file (or package) and every extra file against the manifest;
        :class:`DamagedArtifactError` if one was altered or is gone."""
        for name, expected in ((self.path.name, self.manifest.sha256), *self.manifest.extra_sha256().items()):
            path = self.file(name)
            try:
                # a file that hashed clean and has not changed since (size, mtime, ctime, inode)
                # is not hashed again: an ESRGAN graph is 67 MB, read on every start otherwise
                key = f"{stamps.file_key(path)}|{expected}" if path.is_file() else None
                if key is not None and stamps.recall("verified", key):
                    continue
                actual = sha256_tree(path)
            except OSError as exc:
                raise DamagedArtifactError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
            if actual == expected and key is not None:
                stamps.remember("verified", key)
            if actual != expected:
                raise DamagedArtifactError(
                    f"{path}: sha256 does not match its manifest; run `pixelift export --force {self.model_id}`"
                )

    def file(self, name: str) -> Path:
        """A file of the artifact beside the main one (``extra_files`` in the manifest)."""
        return self.path.with_name(name)


def model_dir(model_id: str) -> Path:
    return inside(artifacts_dir(), validate_id(model_id))


def artifact_dir(model_id: str, target: str) -> Path:
    get_target(target)
    return inside(artifacts_dir(), validate_id(model_id), validate_id(target, "artifact target"))


_LOCKS: dict[str, filelock.FileLock] = {}
_LOCKS_GUARD = threading.Lock()


def artifact_lock(model_id: str, target: str) -> filelock.FileLock:
    """The inter-process lock of one artifact (re-entrant within a thread)."""
    artifact_dir(model_id, target)  # validates both ids
    path = artifacts_dir() / LOCKS / f"{model_id}--{target}.lock"
    with _LOCKS_GUARD:
        lock = _LOCKS.get(str(path))
        if lock is None:
            lock = _LOCKS[str(path)] = filelock.FileLock(str(path), timeout=LOCK_TIMEOUT_S)
    return lock


@contextlib.contextmanager
def locked(model_id: str, target: str) -> Iterator[None]:
    """Hold the artifact's lock; a cache that cannot hold a lock file (read-only) is not locked."""
    lock = artifact_lock(model_id, target)
    try:
        Path(lock.lock_file).parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except filelock.Timeout:
        raise ArtifactBusyError(
            f"{model_id}/{target}: another process has held the artifact's lock for {LOCK_TIMEOUT_S / 60:.0f} minutes; "
            f"if no pixelift process is running, delete {lock.lock_file}"
        ) from None
    except OSError as exc:
        log.debug("artifact lock %s not taken (%s): reading without it", lock.lock_file, exc)
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _read(model_id: str, target: str) -> Artifact | None:
    d = artifact_dir(model_id, target)
    mf = d / MANIFEST
    try:
        text = mf.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DamagedArtifactError(f"{mf}: cannot be read ({exc.strerror or exc})") from exc
    manifest = Manifest.parse(text, mf, model_id=model_id, target=target)
    return Artifact(model_id, target, inside(d, manifest.file), manifest)


def _try_read(model_id: str, target: str) -> tuple[Artifact | None, str | None]:
    try:
        return _read(model_id, target), None
    except DamagedArtifactError as exc:
        return None, str(exc)


def inspect(model_id: str, target: str) -> tuple[Artifact | None, str | None]:
    """``(artifact, None)``, ``(None, None)`` when there is none, or ``(None, why)`` when it is
    damaged. A reader that meets a publish in progress waits for it and reads again."""
    art, problem = _try_read(model_id, target)
    if art is None:
        # nothing usable: maybe a publish was swapping folders. Swaps happen only under the lock,
        # so a read under it sees the state before or after one (and waits for a build in progress)
        with locked(model_id, target):
            art, problem = _try_read(model_id, target)
    return art, problem


def find(model_id: str, target: str) -> Artifact | None:
    """The artifact, or None when it is missing or damaged (a damaged one is logged)."""
    art, problem = inspect(model_id, target)
    if problem is not None:
        log.warning("ignoring a damaged artifact (it will be rebuilt): %s", problem, extra=EVENT)
    return art


def exported_targets(model_id: str) -> list[str]:
    try:
        d = model_dir(model_id)
    except InvalidIdError:
        return []
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file())


def _clean_leftovers(parent: Path, target: str) -> None:
    """Staging and swapped-out folders of publishes that were killed (only called under the lock)."""
    for p in parent.glob(f".{target}.*"):
        log.info("removing the leftover of an interrupted publish: %s", p)
        shutil.rmtree(p, ignore_errors=True)


def publish(
    model_id: str,
    target: str,
    built: Path,
    manifest: dict[str, Any],
    extra: dict[str, Path] | None = None,
) -> Artifact:
    """Move a finished file or package directory (and ``extra`` files, by name) and its
    manifest into the cache atomically, under the artifact's lock."""
    final = artifact_dir(model_id, target)
    with locked(model_id, target):
        final.parent.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(final.parent, target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target}.", dir=final.parent))
        try:
            main_name = manifest["file"]
            shutil.move(str(built), staging / main_name)
            extra_files = {}
            for name, path in (extra or {}).items():
                shutil.move(str(path), staging / name)
                extra_files[name] = {"sha256": sha256_tree(staging / name), "size_bytes": tree_size(staging / name)}
            body = {
                **manifest,
                **({"extra_files": extra_files} if extra_files else {}),
                "model_id": model_id,
                "target": target,
                "sha256": sha256_tree(staging / main_name),
                "size_bytes": tree_size(staging / main_name),
            }
            typed = Manifest.build(body)
            (staging / MANIFEST).write_text(typed.to_json())
            _swap_in(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return Artifact(model_id, target, final / main_name, typed)


def _swap_in(staging: Path, final: Path) -> None:
    """Replace ``final`` by the complete folder ``staging`` (same parent; caller holds the lock)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{staging.name}")
        final.rename(old)
    staging.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def verify_folder(model_id: str, target: str, folder: Path) -> Manifest:
    """The manifest of an artifact folder outside the cache, once it belongs to (model_id, target) and
    every file verifies (:class:`~pixelift.errors.PixeliftError` or ``OSError`` otherwise)."""
    mf = folder / MANIFEST
    manifest = Manifest.parse(mf.read_text(), mf, model_id=model_id, target=target)
    Artifact(model_id, target, inside(folder, manifest.file), manifest).verify()
    return manifest


def adopt(model_id: str, target: str, folder: Path) -> Artifact:
    """Move a complete artifact folder made elsewhere (an unpacked bundle) into the cache:
    its manifest must belong to (model_id, target) and every file must verify, else nothing
    changes. ``folder`` is consumed."""
    final = artifact_dir(model_id, target)
    manifest = verify_folder(model_id, target, folder)
    with locked(model_id, target):
        final.parent.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(final.parent, target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target}.", dir=final.parent))
        try:
            for item in folder.iterdir():
                shutil.move(str(item), staging / item.name)
            _swap_in(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return Artifact(model_id, target, final / manifest.file, manifest)


def update_manifest(art: Artifact, key: str, value: dict[str, Any]) -> Manifest:
    """Merge ``value`` into the manifest's ``key`` section and rewrite it atomically, under the lock."""
    mf = art.path.parent / MANIFEST
    with locked(art.model_id, art.target):
        current = Manifest.parse(mf.read_text(), mf, model_id=art.model_id, target=art.target)
        merged = current.with_section(key, value)
        tmp = mf.with_name(f".{MANIFEST}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(merged.to_json())
            os.replace(tmp, mf)
        finally:
            tmp.unlink(missing_ok=True)
    return merged


def remove(model_id: str, target: str) -> None:
    """Delete one artifact (under its lock)."""
    d = artifact_dir(model_id, target)
    with locked(model_id, target):
        shutil.rmtree(d, ignore_errors=True)
