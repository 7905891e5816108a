"""The filesystem driver's files being written: the appending writer of uploads (in place, under a
lock that `move` respects), the atomic writer (temp file, fsync, rename), and the file helpers
both share with storage.driver.fs."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from ..errors import ObjectBusy
from .base import WriterState

#: Temp files (what `put` and the atomic writer write before renaming) carry this prefix: invisible
#: to `list` and `walk`, removed by `remove_stale_temp` once old.
TEMP_PREFIX = ".cargobay-tmp-"


#: Bytes a writer lets pile up in the page cache before it asks the kernel to start writing them
#: out. Without it a blob's bytes all wait for the fsync at its commit (the kernel's own writeback
#: starts only at gigabytes), which then takes as long as the disk needs for all of them; with it
#: the disk writes while the body arrives, and the fsync waits only for the last step's worth.
#: Pages are dropped two steps behind (`Writeback`), so a smaller step recycles more of a small
#: blob's pages while it is written: 4 MiB against 8 took 8 concurrent 32 MiB uploads from 493 to
#: 572 MiB/s in one alternation (bench/README.md).
WRITEBACK_STEP = 4 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2  # start writeback of the range's dirty pages; do not wait for it


def linux_libc_function(name: str, argtypes: list[type[ctypes._SimpleCData[Any]]]) -> Callable[..., int] | None:
    """libc's function `name` taking `argtypes` and returning an int (setting errno), on Linux;
    None elsewhere, or where this libc has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    call.argtypes = argtypes
    call.restype = ctypes.c_int
    return cast(Callable[..., int], call)


#: sync_file_range(2), or None where there is none: then a commit's fsync does it all.
_sync_file_range_call = linux_libc_function("sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                                                   ctypes.c_uint])


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Ask the kernel to start writing `length` bytes of `fd` from `offset` out, without waiting;
    whether it took the request (False without sync_file_range, or for a bad descriptor). It
    never waits, so it never takes a write error for itself: the fsync still reports it."""
    call = _sync_file_range_call
    return call is not None and call(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0


#: posix_fadvise where the platform has it (not macOS).
_fadvise: Callable[[int, int, int, int], None] | None = getattr(os, "posix_fadvise", None)


def drop_cached(fd: int, offset: int, length: int) -> None:
    """Let the page cache forget `length` bytes of `fd` from `offset` (posix_fadvise DONTNEED):
    pages on disk go, dirty ones and ones being written stay. Advice: it does not wait for the
    disk, takes no write error for itself (the fsync still reports it), and a kernel that
    ignores it loses nothing."""
    if _fadvise is not None:
        with contextlib.suppress(OSError):
            _fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


class Writeback:
    """Starts the kernel writing a file's new bytes out at every WRITEBACK_STEP of the file, and
    drops the pages two steps behind from the page cache. Steps count from the file's start, not
    from where this writer began, so an upload sent in PATCHes smaller than a step has each step
    started by the PATCH that completes it. Only a head start for the fsync that makes the bytes
    durable, which still runs and waits for all of them: a call that fails changes nothing.

    Why drop them: a blob is written once and read by pulls later, as in an object store (MinIO
    writes its parts with O_DIRECT), so its pages in the cache are cache the rest of the machine
    loses, and the pages a step frees are the ones the next steps write into. On a virtual machine
    that is most of an upload's kernel time: writing into pages the guest has not touched yet (or
    has handed back to the host) cost ~2.4 ms of system time a MiB here against 0.3 ms for pages
    used before (bench/README.md). The step dropped was started a step or more earlier, so it is
    on disk as a rule; nothing waits for it (a wait would take the writeback error that the
    fsync must report, while the kernel keeps the file's inode).
    The cost: a pull right after the push, or a completion that must read the upload back to
    verify it, reads all but the last steps from disk.
    """

    def __init__(self, written: int) -> None:
        #: Up to here the kernel was asked to write out (an appended file's earlier steps were, by
        #: the writers before; its last partial one is started with the step it is part of).
        self._started_up_to = written - written % WRITEBACK_STEP

    def after_write(self, fd: int, size: int) -> None:
        if size - self._started_up_to < WRITEBACK_STEP:
            return
        start_writeback(fd, self._started_up_to, size - self._started_up_to)
        behind = self._started_up_to - WRITEBACK_STEP  # the end of the step started before the last one
        if behind > 0:
            # Two steps up to there: the one dropped last time again (its pages still being
            # written then go now; by an appended file's earlier writer, too), and no further
            # back, so the work stays two steps whatever the file's size (a kernel before 5.9, or
            # NFS pages not yet committed, drain every CPU's page lists when a range holds pages
            # it cannot drop).
            start = max(0, behind - 2 * WRITEBACK_STEP)
            drop_cached(fd, start, behind - start)
        self._started_up_to = size


def create_file(path: Path) -> BinaryIO:
    """A new file at `path`, its directories made. Made again if a delete of the emptied
    directory (`delete_many`, a collection) came between making it and creating the file."""
    for _ in range(3):
        try:
            return open(path, "wb")
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)  # only when missing: one call less per put
    return open(path, "wb")


def fsync_close(fd_file: BinaryIO) -> None:
    fd_file.flush()
    os.fsync(fd_file.fileno())
    fd_file.close()


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (the directory entry, not just the file's bytes)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_exclusive(f: BinaryIO, key: str, wait_seconds: float = 2.0) -> None:
    """Take the exclusive lock writers exclude; ObjectBusy if a writer keeps it past the wait."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise ObjectBusy(f"{key} is still being written") from None
            time.sleep(0.01)


class FsFileWriter:
    """Appends straight into the key's file; the file lives under an upload prefix, which nothing
    serves, so it needs no temp name. `commit` makes its bytes durable.

    While open, the writer holds a shared lock on the file, and `FilesystemDriver.move` takes an
    exclusive one: a file cannot be moved away (into the CAS) while a writer may still append to
    it, and a writer that waited for a move finds the path moved and starts a new file instead of
    writing into the moved one.
    """

    def __init__(self, path: Path, append: bool, resolve: Callable[[str], Path],
                 placing: Callable[[str, Callable[[], None]], None]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._resolve = resolve  # a key to its path (`commit_to`)
        #: Runs `commit_to`'s rename of the key so that it is logged with it (the driver's log).
        self._placing = placing
        self._file: BinaryIO = self._open_locked(path, append)
        self._closed = False
        self._size = self._file.seek(0, os.SEEK_END)
        self._writeback = Writeback(self._size)

    @staticmethod
    def _open_locked(path: Path, append: bool) -> BinaryIO:
        for _ in range(100):
            f = open(path, "ab" if append else "wb")  # noqa: SIM115 - owned by the writer
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)
            try:
                if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                    return f  # still the file at this key: nobody moved it while we waited
            except FileNotFoundError:
                pass
            f.close()  # moved away meanwhile: open whatever the key holds now
        raise ObjectBusy(f"{path.name}: could not open a stable file")

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("writer is closed")
        n = self._file.write(data)
        self._size += n
        self._writeback.after_write(self._file.fileno(), self._size)
        return n

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._file.close()

    def cancel(self) -> None:
        self.close()
        self._path.unlink(missing_ok=True)

    def commit(self) -> None:
        if not self._closed:
            self._closed = True
            fsync_close(self._file)

    def saved_state(self) -> WriterState | None:
        return None  # the file is all the state

    def held(self) -> bytes | bytearray | None:
        return None  # in the file

    def _holds_only_ours(self) -> bool:
        """Whether the key still names this writer's file and it has exactly the bytes this writer
        counted (under the exclusive lock: no writer can add any now)."""
        mine = os.fstat(self._file.fileno())
        try:
            current = os.stat(self._path)
        except FileNotFoundError:
            return False
        return current.st_ino == mine.st_ino and current.st_dev == mine.st_dev and mine.st_size == self._size

    def commit_to(self, destination: str) -> None:
        """fsync, then rename onto `destination` under the exclusive lock `move` takes (ours,
        upgraded): ObjectBusy while another writer still has the file open, or when the file is
        not exactly the `size` bytes this writer counted (another one appended meanwhile, or the
        key holds another file now), so what lands is what the caller hashed."""
        if self._closed:
            raise ValueError("writer is closed")
        target = self._resolve(destination)
        self._closed = True
        try:
            lock_exclusive(self._file, str(self._path))
            self._file.flush()
            if not self._holds_only_ours():
                raise ObjectBusy(f"{self._path.name} was written by another writer meanwhile")
            os.fsync(self._file.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)

            def place() -> None:
                os.replace(self._path, target)
                with contextlib.suppress(FileNotFoundError):
                    os.utime(target)  # new where it lands, as a move makes it (garbage collection reads the age)
                fsync_dir(target.parent)

            self._placing(destination, place)
        finally:
            self._file.close()


class FsAtomicWriter:
    """Writes a temp file (TEMP_PREFIX, in the key's directory: invisible to `list` and `walk`,
    taken by `remove_stale_temp` if the process dies) that `commit` fsyncs and renames onto the
    key, so the key holds the old content or all of the new, never part of it."""

    def __init__(self, path: Path, placing: Callable[[Callable[[], None]], None]) -> None:
        self._path = path
        #: Runs `commit`'s rename so that it is logged with it (the driver's log).
        self._placing = placing
        self._tmp = path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        self._file: BinaryIO = create_file(self._tmp)
        self._size = 0
        self._done = False
        self._writeback = Writeback(0)

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._done:
            raise ValueError("writer is closed")
        n = self._file.write(data)
        self._size += n
        self._writeback.after_write(self._file.fileno(), self._size)
        return n

    def close(self) -> None:
        self.cancel()  # nothing of an atomic write survives without its commit

    def cancel(self) -> None:
        if not self._done:
            self._done = True
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                os.rmdir(self._tmp.parent)  # made for this write (a blob's directory): not left empty

    def commit(self) -> None:
        if self._done:
            return
        self._done = True
        def place() -> None:
            os.replace(self._tmp, self._path)
            fsync_dir(self._path.parent)

        try:
            fsync_close(self._file)
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._placing(place)
        except BaseException:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            raise
