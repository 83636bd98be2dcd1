"""Facts remembered between runs, so a warm start repeats no work: an artifact file that hashed
clean, a session whose first run passed. Each stamp is an empty file named by the digest of
everything the fact depends on (a file's path, size, mtime, ctime and inode, versions,
options), so any change to those misses the stamp and the work is done again. A cache that
cannot be written simply remembers nothing.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from pixelift.paths import atomic_write_bytes, writable
from pixelift.versions import installed_version

log = logging.getLogger(__name__)

STAMPS = "stamps"


def file_key(path: Path) -> str:
    """A file's identity: what changes whenever its bytes can have changed (ctime cannot be set back)."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


def version(dist: str) -> str:
    return installed_version(dist) or "-"


def _stamp(kind: str, key: str) -> Path:
    return writable(STAMPS) / kind / hashlib.sha256(key.encode()).hexdigest()[:40]


def recall(kind: str, key: str) -> bool:
    try:
        return _stamp(kind, key).is_file()
    except OSError:
        return False


def remember(kind: str, key: str) -> None:
    path = _stamp(kind, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, b"")
    except OSError as exc:
        log.debug("stamp %s not written (%s): it is checked again next run", path, exc)


__all__ = ["file_key", "recall", "remember", "version"]
