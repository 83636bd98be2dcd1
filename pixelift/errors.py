"""Typed errors. Every error carries a message a user can act on."""

from __future__ import annotations


class PixeliftError(Exception):
    """Base class for every error pixelift raises on purpose."""


class ModelNotFoundError(PixeliftError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we do not want that
        return str(self.args[0]) if self.args else ""


class WeightSourceError(PixeliftError):
    """A weight source cannot be used: missing package, missing file, bad URL."""


class MissingPackageError(WeightSourceError):
    """A pip package that holds the weights is not installed."""


class WeightFormatError(PixeliftError):
    """Weights are corrupt, truncated, or do not match the expected layout."""


class ChecksumError(WeightSourceError):
    """A downloaded or cached file does not have the expected sha256."""


class UnknownArchitectureError(PixeliftError):
    """spandrel (or our own importers) cannot identify the architecture."""


class UnsafeWeightsError(PixeliftError):
    """A pickle that is not loadable with ``weights_only=True``."""


class MissingExtraError(PixeliftError):
    """An optional dependency group (e.g. ``pixelift[export]``) is not installed."""


class ExportError(PixeliftError):
    """Export failed or its parity check did not pass."""


__all__ = [
    "ChecksumError",
    "ExportError",
    "MissingExtraError",
    "MissingPackageError",
    "ModelNotFoundError",
    "PixeliftError",
    "UnknownArchitectureError",
    "UnsafeWeightsError",
    "WeightFormatError",
    "WeightSourceError",
]
