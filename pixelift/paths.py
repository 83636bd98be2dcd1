"""Cache locations and atomic file writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pixelift.errors import OutputExistsError

ENV_HOME = "PIXELIFT_HOME"


def home() -> Path:
    """Root of pixelift's cache: ``$PIXELIFT_HOME`` or the platform user cache dir."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("pixelift", appauthor=False))


ENV_STATE = "PIXELIFT_STATE"


def state_dir() -> Path:
    """Where pixelift keeps what it measures when the cache is read-only (a cache installed
    for several users, or on a read-only volume): ``$PIXELIFT_STATE`` or the user state dir."""
    env = os.environ.get(ENV_STATE)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_state_dir("pixelift", appauthor=False))


def check_env_folders() -> None:
    """Refuse ``$PIXELIFT_HOME`` or ``$PIXELIFT_STATE`` naming what cannot be a folder (a file, or a path
    through one), by name, before any work: every write under it would fail, one file at a time."""
    from pixelift.errors import UsageError

    for env in (ENV_HOME, ENV_STATE):
        raw = os.environ.get(env)
        if not raw:
            continue
        path = Path(raw).expanduser()
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise UsageError(f"{env}={raw}: {existing} is not a folder")


def writable(sub: str) -> Path:
    """``home()/sub`` when it can be created and written, else ``state_dir()/sub``."""
    for root in (home(), state_dir()):
        path = root / sub
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    return state_dir() / sub


def artifacts_dir() -> Path:
    return home() / "artifacts"


def weights_dir() -> Path:
    return home() / "weights"


@contextlib.contextmanager
def atomic_path(dest: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``dest``; rename it onto ``dest`` only on success. ``replace=False``:
    :class:`~pixelift.errors.OutputExistsError` if ``dest`` exists by then (another run wrote it meanwhile:
    the check before the work cannot see that)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_parts(dest.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}{PART_PID_END}", suffix=PART_SUFFIX, dir=dest.parent)
    os.close(fd)
    # mkstemp creates 0600; give the final file the permissions a plain open() would.
    os.chmod(tmp, 0o666 & ~_umask())
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if replace:
            os.replace(tmp_path, dest)
        else:
            _publish_new(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def _publish_new(tmp: Path, dest: Path) -> None:
    exists = OutputExistsError(f"{dest}: already exists (written meanwhile by another run); --overwrite replaces it")
    try:
        os.link(tmp, dest)  # fails on an existing name, atomically: two runs cannot both publish
    except FileExistsError:
        raise exists from None
    except OSError:  # no hard links on this filesystem (FAT, some shares): check, then rename
        if os.path.lexists(dest):
            raise exists from None
        os.replace(tmp, dest)


PART_SUFFIX = ".part"
PART_PID_END = "-pxl-"
#: a part file whose writer cannot be checked (no POSIX kill) is stale after this long
STALE_PART_S = 24 * 3600


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


_CLEANED: set[Path] = set()  # folders already cleaned by this process (a batch writes many files into one)


def clean_stale_parts(folder: Path) -> list[Path]:
    """Remove part files that :func:`atomic_path` left in ``folder`` when its process was
    killed (their writer's pid is gone). Only pixelift's own part files are touched."""
    removed: list[Path] = []
    if folder in _CLEANED:
        return removed
    _CLEANED.add(folder)
    try:
        candidates = list(folder.glob(f".*.*{PART_PID_END}*{PART_SUFFIX}"))
    except OSError:
        return removed
    for p in candidates:
        pid_text = p.name.rsplit(PART_PID_END, 1)[0].rsplit(".", 1)[-1]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            stale = not _alive(int(pid_text)) if os.name == "posix" else time.time() - p.stat().st_mtime > STALE_PART_S
            if stale:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(dest: Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _file_stats(folder: Path) -> Iterator[os.stat_result]:
    """``lstat`` of every file under ``folder`` (one that vanishes meanwhile is skipped)."""
    for root, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                yield os.lstat(os.path.join(root, name))


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist)."""
    return sum(st.st_size for st in _file_stats(folder))


def _recency_and_size(path: Path) -> tuple[float, int] | None:
    """(last use, bytes) of a file, or of a folder from the files in it; None for anything else."""
    st = path.lstat()
    if stat.S_ISREG(st.st_mode):
        return max(st.st_atime, st.st_mtime), st.st_size
    if not stat.S_ISDIR(st.st_mode):
        return None
    files = list(_file_stats(path))
    last = max([st.st_atime, st.st_mtime, *(max(f.st_atime, f.st_mtime) for f in files)])
    return last, sum(f.st_size for f in files)


def prune_lru(folder: Path, budget: int, pattern: str = "*") -> int:
    """Delete the entries matching ``pattern`` in ``folder`` (files, and folders as a whole),
    least recently used first (the later of access and modification times, a folder's from its
    files), until those left hold at most ``budget`` bytes; the bytes freed. Links are left
    alone; an entry another process removes or holds first is skipped."""
    entries: list[tuple[float, int, Path]] = []
    try:
        for path in folder.glob(pattern):
            with contextlib.suppress(OSError):
                found = _recency_and_size(path)
                if found is not None:
                    entries.append((*found, path))
    except OSError:
        return 0
    total = sum(size for _, size, _ in entries)
    freed = 0
    for _, size, path in sorted(entries):
        if total <= budget:
            break
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        total -= size
        freed += size
    return freed
