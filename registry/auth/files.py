"""The auth files on disk: read once, re-read when they change, and edited atomically under a lock.

`registry robot create` edits the htpasswd and rules files while servers run; the servers notice
the change on their next check (at most once a second) and keep the previous contents if the new
ones do not parse, logging one line about it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("cargobay.auth")


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Reloading(Generic[T]):
    """A value loaded from a file and reloaded when the file changes. The first load raises; later
    failed reloads keep the last good value."""

    def __init__(self, path: str | os.PathLike[str], loader: Callable[[Path], T], interval: float = 1.0) -> None:
        self.path = Path(path)
        self._loader = loader
        self._interval = interval
        self._lock = threading.Lock()
        self._signature = _signature(self.path)
        self._value = loader(self.path)
        self._checked = time.monotonic()

    def get(self) -> T:
        now = time.monotonic()
        if now - self._checked < self._interval:
            return self._value
        with self._lock:
            if now - self._checked < self._interval:
                return self._value
            self._checked = now
            signature = _signature(self.path)
            if signature != self._signature:
                try:
                    self._value = self._loader(self.path)
                    self._signature = signature
                    log.info("reloaded %s", self.path)
                except (OSError, ValueError) as exc:
                    log.error("keeping the previous %s: %s", self.path.name, exc)
        return self._value


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock for editing `path` (on `path.lock`), against concurrent CLI runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _durable_temp(path: Path, data: bytes, mode: int) -> str:
    """A fsynced temp file holding `data` beside `path` (same filesystem, so it can be renamed or
    linked into place); the caller removes it if it is not used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data`: temp file, fsync, rename; readers see the old file or the new one."""
    tmp = _durable_temp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def create_exclusively(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Write `path` only if it does not exist yet (atomically: temp file + hard link). False when
    another process got there first, whose file then stands."""
    tmp = _durable_temp(path, data, mode)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
