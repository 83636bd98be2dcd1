"""pixelift: cross-platform edge runtime for AI photo enhancement.

Importing pixelift never imports torch; the export stage (``pixelift.export``) does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixelift.errors import PixeliftError

if TYPE_CHECKING:
    from pixelift.runtime.enhancer import AutoEnhancer, Enhancer, TileOptions

__version__ = "0.1.0"

__all__ = ["AutoEnhancer", "Enhancer", "PixeliftError", "TileOptions", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import pixelift` stays cheap for the CLI and for `pixelift models`.
    if name in ("AutoEnhancer", "Enhancer", "TileOptions"):
        from pixelift.runtime import enhancer

        return getattr(enhancer, name)
    raise AttributeError(f"module 'pixelift' has no attribute {name!r}")
