"""Writing into the store safely: atomic small writes, flock helpers, and `Ingest`, the partial file
a blob download streams into (resumable, verified before it becomes visible)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from ocispec.digest import SizeExceeded
from ocispec.manifest import Descriptor

from ..errors import Cancelled, VerificationError
from ..space import NO_SPACE, SpaceGuard, full


def fsync_dir(path: Path) -> None:
    """Make a rename into directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write `data` to `path` atomically: a temp file (in `tmp_dir`, on the same filesystem, else
    next to `path`), fsync, rename, fsync of the directory."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=tmp_dir or path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


#: How often a wait for a lock checks whether it was cancelled (seconds).
LOCK_POLL = 0.1


@contextlib.contextmanager
def flock(path: Path, mode: int, on_wait: Callable[[], None] | None = None,
          cancel: threading.Event | None = None) -> Iterator[None]:
    """Hold an flock on `path`. When another process holds it, `on_wait` is called and the wait
    goes on until it is released, or, with `cancel`, until that is set (then errors.Cancelled)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            if cancel is None:
                fcntl.flock(fd, mode)
            else:  # a blocking flock in a worker thread could not be interrupted
                while True:
                    if cancel.wait(LOCK_POLL):
                        raise Cancelled() from None
                    try:
                        fcntl.flock(fd, mode | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        continue
        yield
    finally:
        os.close(fd)  # releases the lock


class Ingest:
    """A partial download of one blob, held under that blob's lock. Hashes as it writes (re-hashing
    what an earlier, interrupted run left), refuses bytes beyond the descriptor's size."""

    def __init__(self, path: Path, final_path: Path, desc: Descriptor, space: SpaceGuard | None = None) -> None:
        self.desc = desc
        self.path = path
        self._space = space
        self._final = final_path
        self._file: BinaryIO = open(self.path, "a+b")  # noqa: SIM115 (open for the object's life; close())
        self._hasher = desc.digest.hasher()
        self._offset = 0
        self._file.seek(0)
        while chunk := self._file.read(1 << 20):
            self._hasher.update(chunk)
            self._offset += len(chunk)
        if self._offset > desc.size:
            self.reset()
        self.resumed_from = self._offset

    @property
    def offset(self) -> int:
        return self._offset

    def write(self, data: bytes) -> None:
        if self._offset + len(data) > self.desc.size:
            raise SizeExceeded(f"{self.desc.digest}: more than the expected {self.desc.size} bytes")
        if self._space is not None:
            self._space.charge(len(data))
        try:
            self._file.write(data)
        except OSError as exc:
            if exc.errno in NO_SPACE:  # the next run resumes from what reached the disk (it re-hashes it)
                raise full("fetch", self.path.parent.parent.parent) from None
            raise
        self._hasher.update(data)
        self._offset += len(data)

    def reset(self) -> None:
        self._file.seek(0)
        self._file.truncate()
        self._hasher = self.desc.digest.hasher()
        self._offset = 0

    def commit(self) -> None:
        """Verify size and digest, then move the blob into place. On a mismatch the partial file is
        dropped and VerificationError raised."""
        self._file.flush()
        actual = self._hasher.hexdigest()
        if self._offset != self.desc.size or actual != self.desc.digest.hex:
            self.reset()
            raise VerificationError(
                f"{self.desc.digest}: verification failed: got {self._offset} bytes with digest "
                f"{self.desc.digest.algorithm}:{actual}, expected {self.desc.size} bytes")
        os.fsync(self._file.fileno())
        os.chmod(self.path, 0o644)
        os.replace(self.path, self._final)
        fsync_dir(self._final.parent)

    def close(self) -> None:
        self._file.close()
