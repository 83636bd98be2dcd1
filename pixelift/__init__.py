"""pixelift: cross-platform edge runtime for AI photo enhancement.

Importing pixelift never imports torch; the export stage (``pixelift.export``) does.
"""

from __future__ import annotations

from pixelift.errors import PixeliftError

__version__ = "0.1.0"

__all__ = ["PixeliftError", "__version__"]
