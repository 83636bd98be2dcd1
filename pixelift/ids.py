"""The one rule for ids that become file names (model ids, artifact targets), and the
check that a path built from one stays inside its folder.

An id is 1 to 64 characters of lowercase ASCII letters, digits, ``.``, ``_`` and ``-``,
starting with a letter or digit and not ending with ``.``; it is not a reserved Windows
device name. So an id can never be ``..``, hold a separator of either kind, be absolute,
or carry a look-alike unicode letter.
"""

from __future__ import annotations

import re
from pathlib import Path

from pixelift.errors import InvalidIdError

ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# CON, PRN, AUX, NUL, COM1-9, LPT1-9, with or without an extension, are devices on Windows
_WINDOWS_RESERVED = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?")


def id_problem(value: object) -> str | None:
    """Why ``value`` is not a valid id, or None when it is."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not value:
        return "is empty"
    if len(value) > 64:
        return f"is {len(value)} characters long (64 at most)"
    if not ID_RE.fullmatch(value):
        return (
            "may hold only lowercase ASCII letters, digits, '.', '_' and '-', and must start with a letter or digit"
        )
    if value.endswith("."):
        return "must not end with '.'"
    if _WINDOWS_RESERVED.fullmatch(value):
        return "is a reserved device name on Windows"
    return None


def validate_id(value: object, what: str = "model id") -> str:
    """``value`` if it is a valid id, else :class:`InvalidIdError` saying why."""
    problem = id_problem(value)
    if problem is not None:
        raise InvalidIdError(f"{what} {value!r} {problem}")
    assert isinstance(value, str)
    return value


def inside(root: Path, *parts: str) -> Path:
    """``root / parts...``, refused unless it resolves inside ``root`` (symlinks included)."""
    path = root.joinpath(*parts)
    base = root.resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise InvalidIdError(f"{path} resolves outside {root}; refused")
    return path


__all__ = ["ID_RE", "id_problem", "inside", "validate_id"]
