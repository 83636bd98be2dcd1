"""The service folder: token, ``service.json``, single-instance lock, journal of output folders.

Everything lives in ``paths.writable("service")`` (the cache folder, else the state folder), or
``$PIXELIFT_SERVICE_DIR``. The folder is 0700 and every file in it 0600: the token is the key to
the service. A killed service leaves ``service.json`` behind; the lock (released by the kernel
when the process dies) tells a live service from a stale file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from pixelift import paths

ENV_SERVICE_DIR = "PIXELIFT_SERVICE_DIR"
ENV_SERVER = "PIXELIFT_SERVER"  # how `enhance` without --server uses a service: see cli_serve.server_mode
TOKEN_FILE = "token"
INFO_FILE = "service.json"
LOCK_FILE = "serve.lock"
JOURNAL_FILE = "outputs.json"
LOG_FILE = "service.log"
TOKEN_HEADER = "X-Pixelift-Token"
MAX_JOURNAL = 1000  # output folders remembered for the clean-up after a crash


def service_dir() -> Path:
    env = os.environ.get(ENV_SERVICE_DIR)
    folder = Path(env).expanduser() if env else paths.writable("service")
    folder.mkdir(parents=True, exist_ok=True)
    if os.name == "posix":
        os.chmod(folder, 0o700)
    return folder


def install_id() -> str:
    """Where this pixelift's code is (a service and a client of it must run the same code: one
    from before an upgrade would refuse a newer client's job fields, or do them differently)."""
    return str(Path(__file__).resolve().parents[1])


def home_id() -> str:
    """The artifact cache this process uses (``$PIXELIFT_HOME``): a service and its client must share it,
    or the client's own models and artifacts are not the service's."""
    return os.path.abspath(paths.home())


def service_dir_candidates() -> list[Path]:
    """Where :func:`service_dir` is, or would be made (nothing is created)."""
    env = os.environ.get(ENV_SERVICE_DIR)
    return [Path(env).expanduser()] if env else [paths.home() / "service", paths.state_dir() / "service"]


def existing_service_dir() -> Path | None:
    """The folder where a service was started, if any (where ``enhance`` and ``serve --status``
    look): read only, so a run that finds none has created nothing."""
    return next((c for c in service_dir_candidates() if _has_info(c)), None)


def _has_info(folder: Path) -> bool:
    try:
        return (folder / INFO_FILE).is_file()
    except OSError:  # a folder we may not look into holds no service of ours
        return False


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only the user can read (0600 from creation), atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ServiceInfo:
    """What a client needs to reach the service (``service.json``); the token is in its own file."""

    pid: int
    host: str
    port: int
    version: str
    started: float

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ServiceInfo:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("service.json is not an object")
        return cls(
            pid=int(raw["pid"]),
            host=str(raw["host"]),
            port=int(raw["port"]),
            version=str(raw["version"]),
            started=float(raw["started"]),
        )


def publish(folder: Path, info: ServiceInfo, token: str) -> None:
    """Token first, then ``service.json``: a client that sees the info finds the token."""
    write_private(folder / TOKEN_FILE, token + "\n")
    write_private(folder / INFO_FILE, info.to_json() + "\n")


def unpublish(folder: Path, pid: int) -> None:
    """Remove ``service.json`` and the token if they are still this process's."""
    info = read_info(folder)
    if info is not None and info.pid != pid:
        return
    for name in (INFO_FILE, TOKEN_FILE):
        (folder / name).unlink(missing_ok=True)


def read_info(folder: Path) -> ServiceInfo | None:
    try:
        return ServiceInfo.from_json((folder / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_token(folder: Path) -> str | None:
    try:
        token = (folder / TOKEN_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


class Journal:
    """Output folders of files being written, kept on disk so that a service started after a
    crash removes the part files the dead one left there (``paths.clean_stale_parts``)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / JOURNAL_FILE
        self._folders: list[str] = []
        self._lock = threading.Lock()  # workers add folders concurrently

    def recover(self) -> list[Path]:
        """Clean the folders a previous (killed) service recorded; returns the part files removed."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            folders = [str(f) for f in raw] if isinstance(raw, list) else []
        except (OSError, ValueError):
            folders = []
        removed: list[Path] = []
        for f in folders:
            removed += paths.clean_stale_parts(Path(f))
        self._folders = []
        self._save()
        return removed

    def add(self, folder: Path) -> None:
        key = str(folder)
        with self._lock:
            if key in self._folders:
                return
            self._folders = [*self._folders, key][-MAX_JOURNAL:]
            self._save()

    def _save(self) -> None:
        with contextlib.suppress(OSError):  # a clean-up aid: a read-only folder must not fail a job
            write_private(self.path, json.dumps(self._folders))
