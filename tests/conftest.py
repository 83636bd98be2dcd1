from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Callable, Iterator
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


@pytest.fixture
def serve_dir() -> Iterator[Callable[[Path], str]]:
    """Serve a folder over HTTP on loopback; yields a function folder -> base URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass
