from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def pixelift_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache for the whole session, so each zoo model is exported once."""
    home = tmp_path_factory.mktemp("pixelift-home")
    old = os.environ.get("PIXELIFT_HOME")
    os.environ["PIXELIFT_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("PIXELIFT_HOME", None)
    else:
        os.environ["PIXELIFT_HOME"] = old


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(2)
