"""Portable artifact bundles: export on a machine with torch, run on a laptop without it.

A bundle is one uncompressed tar file (the ONNX and IR files compress poorly)::

    bundle.json                               what is inside, with the sha256 of every file
    artifacts/<model-id>/<target>/<files>     the artifact folders, manifests included
    models/<model-id>.json                    specs of user models (built-in ones need none)

:func:`pack` writes it atomically; :func:`install` verifies everything before anything
lands in the cache: the schema, the id rule for every model and target, member names
(plain files under those folders only: no absolute paths, ``..``, links or devices), each
file's sha256 against ``bundle.json``, and then each artifact against its own manifest.
Each artifact is swapped in under its lock, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pixelift.artifacts.builders import REMEDY
from pixelift.artifacts.manifest import MANIFEST, Manifest
from pixelift.artifacts.store import Artifact, adopt, exported_targets, find, verify_folder
from pixelift.artifacts.targets import TARGETS
from pixelift.errors import PixeliftError
from pixelift.ids import id_problem, inside, validate_id
from pixelift.paths import atomic_path, home, sha256_file

log = logging.getLogger(__name__)

BUNDLE_SCHEMA = 1
INDEX = "bundle.json"
#: a bundle member larger than this is refused (the largest zoo artifact is ~70 MB)
MAX_MEMBER_BYTES = 4 << 30


class BundleError(PixeliftError):
    """A bundle cannot be written, or is damaged, tampered with or unsafe to install."""


@dataclass(frozen=True)
class BundleEntry:
    model_id: str
    target: str
    files: dict[str, str]  # path inside the artifact folder -> sha256


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def pack(
    model_ids: Sequence[str],
    dest: Path,
    *,
    targets: Iterable[str] | None = None,
    overwrite: bool = False,
) -> list[BundleEntry]:
    """Write the chosen models' artifacts (every exported target, or ``targets``) and the specs
    of user models into ``dest``. Every artifact is verified first: a damaged one is refused."""
    from pixelift import models

    wanted = None if targets is None else set(targets)
    for t in wanted or ():
        if t not in TARGETS:
            raise BundleError(f"unknown target {t!r}; known: {', '.join(TARGETS)}")
    if dest.exists() and not overwrite:
        raise BundleError(f"{dest} exists; pass overwrite (--overwrite) to replace it")
    entries: list[BundleEntry] = []
    chosen: list[tuple[Artifact, dict[str, Path]]] = []
    user_specs: dict[str, dict[str, Any]] = {}
    for model_id in dict.fromkeys(model_ids):  # an id named twice is packed once
        spec = models.get(validate_id(model_id))
        if spec.id not in models.REGISTRY:
            user_specs[spec.id] = spec.to_dict()
        names = [t for t in exported_targets(model_id) if wanted is None or t in wanted]
        if not names:
            raise BundleError(f"{model_id}: no exported artifact to pack{' for ' + ', '.join(sorted(wanted)) if wanted else ''}")
        for target in names:
            art = find(model_id, target)
            if art is None:
                raise BundleError(f"{model_id}/{target}: damaged; run `pixelift export --force {model_id}` first")
            art.verify()
            files = _files(art.path.parent)
            entries.append(BundleEntry(model_id, target, {rel: sha256_file(p) for rel, p in files.items()}))
            chosen.append((art, files))
    index = {
        "schema": BUNDLE_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "artifacts": [{"model_id": e.model_id, "target": e.target, "files": e.files} for e in entries],
        "user_specs": user_specs,
    }
    if dest.is_dir():
        raise BundleError(f"{dest} is a folder; name the bundle file to write")
    try:
        with atomic_path(dest) as tmp, tarfile.open(tmp, "w") as tar:
            _add_bytes(tar, INDEX, json.dumps(index, indent=2, sort_keys=True).encode())
            for spec_id, spec_dict in user_specs.items():
                _add_bytes(tar, f"models/{spec_id}.json", json.dumps(spec_dict, indent=2).encode())
            for art, files in chosen:
                for rel, path in files.items():
                    tar.add(path, arcname=f"artifacts/{art.model_id}/{art.target}/{rel}", recursive=False)
    except OSError as exc:
        raise BundleError(f"{dest}: cannot write the bundle ({exc.strerror or exc}); nothing written") from None
    return entries


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _read_index(tar: tarfile.TarFile, where: Path) -> dict[str, Any]:
    try:
        member = tar.getmember(INDEX)
        fh = tar.extractfile(member)
        if fh is None:
            raise KeyError(INDEX)
        index = json.loads(fh.read(1 << 24))
    except (KeyError, ValueError) as exc:
        raise BundleError(f"{where}: not a pixelift bundle (no readable {INDEX}: {exc})") from None
    if not isinstance(index, dict) or not isinstance(index.get("artifacts"), list):
        raise BundleError(f"{where}: {INDEX} is malformed")
    if index.get("schema") != BUNDLE_SCHEMA:
        raise BundleError(f"{where}: bundle schema {index.get('schema')!r}; this pixelift reads {BUNDLE_SCHEMA}")
    return index


def _entries(index: dict[str, Any], where: Path) -> list[BundleEntry]:
    out: list[BundleEntry] = []
    for raw in index["artifacts"]:
        if not isinstance(raw, dict) or not isinstance(raw.get("files"), dict):
            raise BundleError(f"{where}: malformed artifact entry {raw!r}")
        model_id, target = raw.get("model_id"), raw.get("target")
        for value, what in ((model_id, "model id"), (target, "target")):
            problem = id_problem(value)
            if problem is not None:
                raise BundleError(f"{where}: {what} {value!r} {problem}")
        if target not in TARGETS:
            raise BundleError(f"{where}: unknown target {target!r}")
        for rel in raw["files"]:
            p = PurePosixPath(rel)
            if p.is_absolute() or ".." in p.parts or not p.parts or "\\" in rel:
                raise BundleError(f"{where}: unsafe file name {rel!r} in {model_id}/{target}")
        if any((e.model_id, e.target) == (model_id, target) for e in out):
            raise BundleError(f"{where}: lists {model_id}/{target} twice; refused")
        out.append(BundleEntry(str(model_id), str(target), {str(k): str(v) for k, v in raw["files"].items()}))
    return out


def install(src: Path, *, force: bool = False) -> list[BundleEntry]:
    """Verify the bundle ``src`` and install its artifacts (and user model specs) into the cache.
    An artifact already there with the same manifest hash is kept unless ``force``."""
    try:
        tar = tarfile.open(src, "r:*")  # noqa: SIM115 (closed by the with below)
    except tarfile.TarError:  # its message lists every compression tried, one line each
        raise BundleError(f"{src}: not a pixelift bundle (no tar archive; `pixelift artifacts pack` makes one)") from None
    except OSError as exc:
        raise BundleError(f"{src}: not a readable bundle ({exc.strerror or exc})") from None
    try:
        with tar, tempfile.TemporaryDirectory(prefix=".bundle-", dir=_scratch_parent()) as tmp:
            return _install(tar, src, Path(tmp), force)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleError(f"{src}: damaged or truncated bundle ({type(exc).__name__}: {exc}); nothing installed") from None


def _install(tar: tarfile.TarFile, src: Path, staging: Path, force: bool) -> list[BundleEntry]:
    from pixelift import models
    from pixelift.models.spec import ModelSpec

    index = _read_index(tar, src)
    entries = _entries(index, src)
    expected = {f"artifacts/{e.model_id}/{e.target}/{rel}": sha for e in entries for rel, sha in e.files.items()}
    specs = index.get("user_specs") or {}
    if not isinstance(specs, dict):
        raise BundleError(f"{src}: user_specs is malformed")
    expected_specs = {f"models/{validate_id(k)}.json" for k in specs}
    seen: set[str] = set()
    for member in tar.getmembers():
        if member.name == INDEX:
            continue
        if member.name not in expected and member.name not in expected_specs:
            raise BundleError(f"{src}: unexpected member {member.name!r}; refused")
        if not member.isfile():
            raise BundleError(f"{src}: {member.name!r} is not a plain file (link or device); refused")
        if member.size > MAX_MEMBER_BYTES:
            raise BundleError(f"{src}: {member.name!r} is {member.size:,} bytes; refused")
        fh = tar.extractfile(member)
        if fh is None:
            raise BundleError(f"{src}: {member.name!r} cannot be read")
        dest = inside(staging, *PurePosixPath(member.name).parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as out:
            shutil.copyfileobj(fh, out)
        if member.name in expected and sha256_file(dest) != expected[member.name]:
            raise BundleError(f"{src}: {member.name} does not match its sha256 in {INDEX}; nothing installed")
        seen.add(member.name)
    missing = (set(expected) | expected_specs) - seen
    if missing:
        raise BundleError(f"{src}: truncated, {len(missing)} file(s) missing (e.g. {sorted(missing)[0]})")
    new_specs = []
    for spec_id, raw in specs.items():
        try:
            spec = ModelSpec.from_dict(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{src}: the spec of {spec_id} is invalid ({exc})") from None
        if spec.id != spec_id or spec.id in models.REGISTRY:
            raise BundleError(f"{src}: user spec {spec_id!r} names {spec.id!r} or a built-in model; refused")
        new_specs.append(spec)
    for e in entries:  # every artifact verifies before any is installed: a bad one leaves the cache as it was
        try:
            verify_folder(e.model_id, e.target, staging / "artifacts" / e.model_id / e.target)
        except (PixeliftError, OSError) as exc:
            # named as in the bundle, not the scratch folder; the cure is another bundle, not an export here
            why = str(exc).split(REMEDY)[0].replace(f"{staging}{os.sep}", "")
            raise BundleError(f"{src}: {e.model_id}/{e.target}: {why}; nothing installed (pack it again)") from None
    installed = []
    for e in entries:
        current = find(e.model_id, e.target)
        folder = staging / "artifacts" / e.model_id / e.target
        if current is not None and not force and current.sha256 == _manifest_sha(folder, e.model_id, e.target):
            log.info("%s/%s: already installed", e.model_id, e.target)
            continue
        try:
            adopt(e.model_id, e.target, folder)
        except PixeliftError as exc:
            raise BundleError(f"{src}: {e.model_id}/{e.target}: {exc}") from None
        installed.append(e)
    for spec in new_specs:
        models.save_user_spec(spec)
    return installed


def _manifest_sha(folder: Path, model_id: str, target: str) -> str | None:
    try:
        return Manifest.parse((folder / MANIFEST).read_text(), folder, model_id=model_id, target=target).sha256
    except (OSError, PixeliftError):
        return None


def _scratch_parent() -> Path:
    """Unpack beside the cache so the final moves are renames on one file system."""
    parent = home() / "artifacts"
    parent.mkdir(parents=True, exist_ok=True)
    return parent


__all__ = ["BUNDLE_SCHEMA", "BundleEntry", "BundleError", "install", "pack"]
