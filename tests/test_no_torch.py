"""The runtime side never imports torch: a laptop install has no 2 GB framework."""

from __future__ import annotations

import subprocess
import sys


def test_import_and_list_models_without_torch() -> None:
    code = (
        "import sys\n"
        "import pixelift, pixelift.models, pixelift.runtime, pixelift.providers, pixelift.cli, pixelift.samples\n"
        "from click.testing import CliRunner\n"
        "r = CliRunner().invoke(pixelift.cli.main, ['models', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "bad = sorted(m for m in ('torch', 'spandrel', 'torchvision') if m in sys.modules)\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
