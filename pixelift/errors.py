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


class InferenceOutOfMemoryError(PixeliftError):
    """A model ran out of memory on one inference call. Tiled inference may retry with smaller tiles."""


class TileShapeError(PixeliftError):
    """A model returned a tile of the wrong shape (batch, channels or scale do not match the input tile)."""


__all__ += ["InferenceOutOfMemoryError", "TileShapeError"]


class ImageReadError(PixeliftError):
    """An input image is missing, empty, corrupt, truncated, or in a format pixelift does not read."""


class ImageTooLargeError(ImageReadError):
    """An input image has more pixels than the decompression-bomb guard allows (``max_pixels``)."""


class ImageWriteError(PixeliftError):
    """An output image cannot be written (encoder failure, or data the chosen format cannot hold)."""


class OutputExistsError(ImageWriteError, FileExistsError):
    """The output file already exists and ``overwrite`` was not requested."""


class AlphaNotSupportedError(ImageWriteError):
    """The output format (JPEG) cannot hold an alpha channel and flattening was not requested."""


__all__ += [
    "AlphaNotSupportedError",
    "ImageReadError",
    "ImageTooLargeError",
    "ImageWriteError",
    "OutputExistsError",
]


class InvalidIdError(PixeliftError, ValueError):
    """An id (model id, artifact target) breaks the id rule in :mod:`pixelift.ids`."""


class ArtifactMissingError(PixeliftError):
    """The model has no (intact) artifact for a target and this install cannot build one."""


class DamagedArtifactError(PixeliftError):
    """An artifact's manifest is unreadable or its files do not match their recorded sha256."""


class ArtifactBusyError(PixeliftError):
    """Another process held an artifact's lock for longer than pixelift waits."""


class UsageError(PixeliftError, ValueError):
    """An option, argument or environment variable has a value pixelift cannot use."""


class InvalidImageError(PixeliftError, ValueError):
    """Pixel data that cannot be processed: empty, wrong shape or dtype, NaN or infinite values."""


__all__ += ["ArtifactBusyError", "ArtifactMissingError", "DamagedArtifactError", "InvalidIdError", "InvalidImageError", "UsageError"]


class ProviderOptionError(UsageError):
    """A provider was given an option it does not have, or a value it does not accept."""


__all__ += ["ProviderOptionError"]


class OutputTooLargeForFormatError(ImageWriteError):
    """The output is larger than its format can hold (JPEG 65,535 px a side, WebP 16,383); TIFF can."""


class StreamingUnsupportedError(UsageError):
    """Streamed output was asked for a job that cannot stream (a model chain, whole-image statistics, a resize)."""


class EngineError(PixeliftError):
    """A distributed engine (Ray) cannot start or connect, or lost a file past its retries."""


__all__ += ["EngineError", "OutputTooLargeForFormatError", "StreamingUnsupportedError"]
