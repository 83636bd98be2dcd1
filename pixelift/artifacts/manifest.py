"""The artifact manifest: typed, versioned, validated on every read. Torch-free.

A manifest is JSON beside the artifact. The fields every reader relies on are typed
attributes of :class:`Manifest` and are checked when it is parsed: a manifest that is not
JSON, lacks one of them, names another model or target, names a file outside its folder,
or was written by a newer schema is a :class:`~pixelift.errors.DamagedArtifactError`.
What the export stage records beyond them (tool versions, source hashes, the int8 study)
stays in :attr:`Manifest.body`, read through ``manifest["key"]``. The parity block and the
fidelity records are typed too (:class:`ParityReport`, :class:`FidelityRecord`): a record
that does not read as one makes the manifest damaged. Their JSON is written as before.

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


def _number(raw: Mapping[str, Any], key: str) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number, not {value!r}")
    return float(value)


def _maybe_number(raw: Mapping[str, Any], key: str) -> float | None:
    return None if raw.get(key) is None else _number(raw, key)


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, not {value!r}")
    return value


def _maybe_text(raw: Mapping[str, Any], key: str) -> str | None:
    return None if raw.get(key) is None else _text(raw, key)


def _object(raw: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(f"{what} must be an object, not {type(raw).__name__}")
    return raw


@dataclass(frozen=True)
class ParityCheck:
    """One parity comparison (pixelift.export.parity.compare): it passes at ``threshold_db``."""

    reference: str
    candidate: str
    image: str
    psnr_db: float
    max_abs: float
    threshold_db: float
    passed: bool

    @classmethod
    def judged(
        cls, reference: str, candidate: str, image: str, psnr_db: float, max_abs: float, threshold_db: float
    ) -> ParityCheck:
        return cls(reference, candidate, image, psnr_db, max_abs, threshold_db, psnr_db >= threshold_db)

    @classmethod
    def from_json(cls, raw: Any) -> ParityCheck:
        r = _object(raw, "a parity check")
        passed = r.get("passed")
        if not isinstance(passed, bool):
            raise ValueError(f"parity check passed must be true or false, not {passed!r}")
        return cls(
            reference=_text(r, "reference"),
            candidate=_text(r, "candidate"),
            image=_text(r, "image"),
            psnr_db=_number(r, "psnr_db"),
            max_abs=_number(r, "max_abs"),
            threshold_db=_number(r, "threshold_db"),
            passed=passed,
        )

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class ParityReport:
    """The ``parity`` block: whether the artifact passed, its checks, and an optional note
    (reduced-precision artifacts are judged by their fidelity records instead)."""

    passed: bool = False
    checks: tuple[ParityCheck, ...] = ()
    note: str | None = None

    @classmethod
    def from_json(cls, raw: Any) -> ParityReport:
        r = _object(raw, "parity")
        checks = r.get("checks", [])
        if not isinstance(checks, list):
            raise ValueError("parity checks must be a list")
        return cls(bool(r.get("passed")), tuple(ParityCheck.from_json(c) for c in checks), _maybe_text(r, "note"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"passed": self.passed, "checks": [c.to_json() for c in self.checks]}
        return out if self.note is None else {**out, "note": self.note}

    @property
    def worst_db(self) -> float | None:
        return min((c.psnr_db for c in self.checks), default=None)


@dataclass(frozen=True)
class FidelityRecord:
    """One measured capability row (pixelift.precision.measure): the worst PSNR on held-out
    crops against the fp32 reference, finiteness and seconds per crop, on one machine with
    the row's options. A row that failed to run has ``error`` and no measurements."""

    provider: str
    precision: str
    target: str
    options: Mapping[str, Any]
    machine: str
    psnr_db: float | None
    finite: bool
    seconds: float | None
    per_image_db: Mapping[str, float] | None = None
    timing_input: tuple[int, ...] | None = None
    reference: str | None = None
    images: str | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.precision}"

    @property
    def usable(self) -> bool:
        """Measured: a candidate for selection (it may still miss a gate)."""
        return self.seconds is not None and not self.error

    @classmethod
    def from_json(cls, raw: Any) -> FidelityRecord:
        r = _object(raw, "a fidelity record")
        options = _object(r.get("options", {}), "fidelity options")
        finite = r.get("finite")
        if not isinstance(finite, bool):
            raise ValueError(f"fidelity finite must be true or false, not {finite!r}")
        per_image = r.get("per_image_db")
        if per_image is not None:
            per_image = {str(k): _number(per_image, k) for k in _object(per_image, "per_image_db")}
        shape = r.get("timing_input")
        if shape is not None and (
            not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape)
        ):
            raise ValueError(f"timing_input must be a list of integers, not {shape!r}")
        return cls(
            provider=_text(r, "provider"),
            precision=_text(r, "precision"),
            target=_text(r, "target"),
            options=dict(options),
            machine=_maybe_text(r, "machine") or "",
            psnr_db=_maybe_number(r, "psnr_db"),
            finite=finite,
            seconds=_maybe_number(r, "seconds"),
            per_image_db=per_image,
            timing_input=tuple(shape) if shape is not None else None,
            reference=_maybe_text(r, "reference"),
            images=_maybe_text(r, "images"),
            error=_maybe_text(r, "error"),
        )

    def to_json(self) -> dict[str, Any]:
        """The record as JSON, with the keys it was always written with (optional ones only when set)."""
        out: dict[str, Any] = {"provider": self.provider, "precision": self.precision, "target": self.target}
        if self.error is not None:
            out["error"] = self.error
        out |= {"options": dict(self.options), "machine": self.machine, "psnr_db": self.psnr_db}
        if self.per_image_db is not None:
            out["per_image_db"] = dict(self.per_image_db)
        out |= {"finite": self.finite, "seconds": self.seconds}
        if self.timing_input is not None:
            out["timing_input"] = list(self.timing_input)
        for key in ("reference", "images"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def fidelity_records(raw: Any) -> dict[str, FidelityRecord]:
    """``{"provider:precision": record}`` read and checked (ValueError saying what is wrong)."""
    out = {}
    for key, rec in _object({} if raw is None else raw, "fidelity").items():
        record = FidelityRecord.from_json(rec)
        if record.key != key:
            raise ValueError(f"fidelity record {key!r} describes {record.key}")
        out[key] = record
    return out


@dataclass(frozen=True)
class Manifest(Mapping[str, Any]):
    schema: int
    model_id: str
    target: str
    file: str
    sha256: str
    size_bytes: int
    spec: Mapping[str, Any]
    parity: ParityReport
    extra_files: Mapping[str, FileRecord]
    #: "provider:precision" -> fidelity record (pixelift.precision.measure)
    fidelity: Mapping[str, FidelityRecord]
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

    @property
    def parity_passed(self) -> bool:
        return self.parity.passed

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
        parity = ParityReport.from_json(b.get("parity", {}))
        extra: dict[str, FileRecord] = {}
        for name, rec in dict(b.get("extra_files") or {}).items():
            if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
                raise ValueError(f"extra file name {name!r} is not a plain file name")
            if not isinstance(rec, dict) or not _SHA.fullmatch(str(rec.get("sha256"))):
                raise ValueError(f"extra file {name!r} has no valid sha256")
            extra[name] = FileRecord(rec["sha256"], int(rec.get("size_bytes", 0)))
        fidelity = fidelity_records(b.get("fidelity"))
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
            parity=parity,
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


__all__ = [
    "MANIFEST",
    "SCHEMA",
    "FidelityRecord",
    "FileRecord",
    "Manifest",
    "ParityCheck",
    "ParityReport",
    "fidelity_records",
]
