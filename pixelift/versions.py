"""Installed distributions' versions: one place that asks importlib.metadata (0.02 s to import,
with email and zipfile, so it is imported when a version is asked for, not on every start)."""

from __future__ import annotations

from collections.abc import Iterable


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``; None when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def installed_versions(distributions: Iterable[str]) -> dict[str, str | None]:
    return {d: installed_version(d) for d in distributions}


__all__ = ["installed_version", "installed_versions"]
