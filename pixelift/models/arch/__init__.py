"""Network architectures pixelift defines itself (those spandrel does not ship)."""
