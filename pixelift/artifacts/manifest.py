"""The artifact manifest: typed, versioned, validated on every read. Torch-free.

A manifest is JSON beside the artifact. The fields every reader relies on are typed
attributes of :class:`Manifest` and are checked when it is parsed: a manifest that is not
JSON, lacks one of them, names another model or target, names a file outside its folder,
or was written by a newer schema is a :class:`~pixelift.errors.DamagedArtifactError`.
What the export stage records beyond them (tool versions, source hashes, the int8 study)
stays in :attr:`Manifest.body`, read through ``manifest["key"]``.

Schema history: 1, the first; manifests without a ``schema`` field are read as 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixelift.errors import DamagedArtifactError
from pixelift.ids import id_problem

MANIFEST = "manifest.json"
SCHEMA = 1
_SHA = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Manifest(Mapping[str, Any]):
    schema: int
    model_id: str
    target: str
    file: str
    sha256: str
    size_bytes: int
    spec: Mapping[str, Any]
    parity_passed: bool
    extra_files: Mapping[str, FileRecord]
    #: "provider:precision" -> fidelity record (pixelift.precision.measure)
    fidelity: Mapping[str, Mapping[str, Any]]
    #: names of the SE blocks' geometry records (pixelift.runtime.se_sync), [] for none
    se_blocks: tuple[Mapping[str, Any], ...]
    body: Mapping[str, Any] = field(repr=False)

    # --- Mapping over the whole JSON body --------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.body[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.body)

    def __len__(self) -> int:
        return len(self.body)

    # --- typed helpers ----------------------------------------------------------------

    def extra_sha256(self) -> dict[str, str]:
        return {name: rec.sha256 for name, rec in self.extra_files.items()}

    @property
    def alignment(self) -> int:
        return int(self.spec.get("alignment", 1))

    def with_section(self, key: str, value: Mapping[str, Any]) -> Manifest:
        """A copy whose ``key`` section (a JSON object) has ``value`` merged in."""
        body = dict(self.body)
        body[key] = {**body.get(key, {}), **value}
        return Manifest.build(body)

    def to_json(self) -> str:
        return json.dumps(dict(self.body), indent=2, sort_keys=True, default=_jsonable)

    # --- construction -------------------------------------------------------------------

    @classmethod
    def build(cls, body: Mapping[str, Any]) -> Manifest:
        """Validate a manifest body (raises ``ValueError`` saying what is wrong)."""
        b = dict(body)
        b.setdefault("schema", SCHEMA)
        schema = b["schema"]
        if not isinstance(schema, int) or schema < 1:
            raise ValueError(f"schema must be a positive integer, not {schema!r}")
        if schema > SCHEMA:
            raise ValueError(f"written by a newer pixelift (schema {schema}; this one reads up to {SCHEMA})")
        for key in ("model_id", "target"):
            if id_problem(b.get(key)) is not None:
                raise ValueError(f"{key} {b.get(key)!r} {id_problem(b.get(key))}")
        fname = b.get("file")
        if not isinstance(fname, str) or not fname or fname in (".", "..") or "/" in fname or "\\" in fname:
            raise ValueError(f"file must be a plain file name, not {fname!r}")
        sha = b.get("sha256")
        if not isinstance(sha, str) or not _SHA.fullmatch(sha):
            raise ValueError(f"sha256 must be 64 hex digits, not {sha!r}")
        spec = b.get("spec")
        if not isinstance(spec, dict) or spec.get("id") != b["model_id"]:
            raise ValueError("spec is missing or names another model")
        parity = b.get("parity", {})
        if not isinstance(parity, dict):
            raise ValueError("parity must be an object")
        extra: dict[str, FileRecord] = {}
        for name, rec in dict(b.get("extra_files") or {}).items():
            if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
                raise ValueError(f"extra file name {name!r} is not a plain file name")
            if not isinstance(rec, dict) or not _SHA.fullmatch(str(rec.get("sha256"))):
                raise ValueError(f"extra file {name!r} has no valid sha256")
            extra[name] = FileRecord(rec["sha256"], int(rec.get("size_bytes", 0)))
        fidelity = b.get("fidelity") or {}
        if not isinstance(fidelity, dict) or not all(isinstance(v, dict) for v in fidelity.values()):
            raise ValueError("fidelity must map row keys to records")
        se_blocks = b.get("se_blocks") or []
        if not isinstance(se_blocks, list):
            raise ValueError("se_blocks must be a list")
        return cls(
            schema=schema,
            model_id=b["model_id"],
            target=b["target"],
            file=fname,
            sha256=sha,
            size_bytes=int(b.get("size_bytes", 0)),
            spec=spec,
            parity_passed=bool(parity.get("passed")),
            extra_files=extra,
            fidelity=fidelity,
            se_blocks=tuple(se_blocks),
            body=b,
        )

    @classmethod
    def parse(cls, text: str, where: Path, *, model_id: str, target: str) -> Manifest:
        """Parse and validate a manifest read from ``where``; it must belong to (model_id, target)."""
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            raw.setdefault("model_id", model_id)
            raw.setdefault("target", target)
            if (raw["model_id"], raw["target"]) != (model_id, target):
                raise ValueError(f"it describes {raw['model_id']}/{raw['target']}")
            return cls.build(raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise DamagedArtifactError(
                f"{where}: damaged manifest ({exc}); run `pixelift export --force {model_id}` to rebuild it"
            ) from None


def _jsonable(o: object) -> Any:
    if isinstance(o, Mapping):
        return dict(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


__all__ = ["MANIFEST", "SCHEMA", "FileRecord", "Manifest"]
