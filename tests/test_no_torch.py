"""The runtime side never imports torch: a laptop install has no 2 GB framework."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from pixelift.samples import sample_photo


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


def test_enhance_runs_with_torch_and_onnx_unimportable() -> None:
    """A laptop install: onnxruntime + numpy + Pillow, with the artifact already in the cache."""
    from pixelift.export import to_onnx

    to_onnx("span-x2-ch48")  # in this session's PIXELIFT_HOME, which the child inherits
    code = (
        "import sys\n"
        "for name in ('torch', 'spandrel', 'onnx', 'onnxslim', 'ncnn'):\n"
        "    sys.modules[name] = None  # any import of them now raises ImportError\n"
        "import numpy as np\n"
        "from pixelift import Enhancer\n"
        "from pixelift.samples import sample_photo\n"
        "out = Enhancer('span-x2-ch48', provider='cpu').enhance(sample_photo()[:40, :56])\n"
        "assert out.shape == (80, 112, 3) and out.dtype == np.uint8, out.shape\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_missing_artifact_without_torch_names_the_extra(tmp_path: Path) -> None:
    """The builder module loads without torch and failed deep inside building ("internal error:
    ModuleNotFoundError"); the documented answer is the export extra, or a bundle made elsewhere."""
    src = tmp_path / "a.png"
    Image.fromarray(sample_photo()[:32, :32]).save(src)
    code = (
        "import sys\n"
        "for name in ('torch', 'spandrel', 'onnx', 'onnxslim'):\n"
        "    sys.modules[name] = None\n"
        "from pixelift.cli import main\n"
        f"main(['enhance', {str(src)!r}, '-o', {str(tmp_path / 'o.png')!r}, '--no-server'])\n"
    )
    env = {**os.environ, "PIXELIFT_HOME": str(tmp_path / "empty-cache")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1 and "pixelift[export]" in proc.stderr and "internal error" not in proc.stderr, proc.stderr
