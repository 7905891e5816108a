"""The filesystem driver's write-ahead log: a small object's put is durable after one flush of
one log, not two flushes of its own (the file, then its directory), and several puts made
together (`put_many`: a manifest's bytes and its revision link; a push's tags and their markers)
share that one flush.

The log is one preallocated file below the root (`.cargobay-log`, invisible to listings). Every
change the driver makes to a key is a record, appended under an exclusive lock that every process
of the store takes (flock), and applied to the files under the same lock, so the files change in
the order of the log:
- `P` (put): the key's whole new content. The record is flushed (fdatasync) before the file is
  written; the file is then written without a flush of its own (temp file, rename). A put of
  what the file holds already (checked under the lock) is no record.
- `D` (delete): the key, or a prefix whose keys all went. Not flushed, as a delete never was:
  a crash may undo it, putting back content the log or a flush made durable, never part of one.
- `X` (placed): a key another path made durable itself (a blob renamed into the CAS by an
  upload, a put too large for the log), logged flushed under the lock with its rename, so no
  record comes between them.

While a record is applied the header names it: if its process dies (kill -9) the next holder of
the lock finishes it first. If applying fails (the disk is full), what each key holds then is
logged instead, so no replay finishes a put its caller was told failed.

A crash of the machine leaves the log's flushed records (each checked by its CRC; a torn tail is
where the log ends) and files that may be missing or hold only part of what was written since the
last checkpoint. `replay` (by the process that opens the store when no other has it open, or by
the next one if that one died replaying: the header says so) takes, for each key the log names,
its last record: a `P` writes the content again, a `D` removes what is there, an `X` leaves the
file alone. Every change to a logged key is in the log, so the replay gives the state the records
describe: the one the store had, up to changes never flushed.

A checkpoint makes every file written since the last one durable with one `syncfs`, then starts a
new epoch at the log's start; records of an older epoch are never read again. It runs when the log
is full, after a replay, and when a process that wrote exits cleanly, so that a store nobody has
open holds no records (a backup restored, or a file changed by hand, is not undone at the next
start). The root must be one filesystem (`syncfs` flushes the log's), local to the machine (flock).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import os
import struct
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Protocol

from .fswriters import fsync_dir, linux_libc_function
from .logrecords import DELETE, PLACED, PUT, RECORD_SIZE, Change, decode, encode, record, records

#: The log's file and the file whose shared lock says a process has the store open. Both begin
#: with HIDDEN_PREFIX, which listings skip.
HIDDEN_PREFIX = ".cargobay-"
LOG_NAME = ".cargobay-log"
OPEN_NAME = ".cargobay-log.open"

_MAGIC = b"CBLOG001"
#: magic, epoch, end (where the next record goes), the record being applied (0: none), a replay under way
_HEADER = struct.Struct("<8sQQQQ")
_HEADER_SIZE = 4096  # one page: the header never shares a page with a record

#: The log starts with room for this much and doubles (zeros, flushed once) until it holds
#: CAPACITY bytes: appends overwrite allocated blocks, so their flush writes data, not the file's size.
FIRST_SIZE = 64 << 10
CAPACITY = 16 << 20
#: A put of more than this goes around the log (its own flushes, then an `X`).
LARGEST_LOGGED = 1 << 20

#: Keys of a large delete (a collection's batch) per record: a record stays far below CAPACITY.
_DELETES_A_RECORD = 1024


_syncfs = linux_libc_function("syncfs", [ctypes.c_int])
#: fdatasync(2) where there is one (not on macOS: fsync there).
_datasync = getattr(os, "fdatasync", os.fsync)


def sync_filesystem(fd: int) -> None:
    """Make everything written to the filesystem holding `fd` durable (syncfs(2); sync(2) where
    there is none)."""
    if _syncfs is None:
        os.sync()
    elif _syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class Applier(Protocol):
    """What the log does to files (the driver's file operations, unflushed)."""

    def write(self, key: str, content: bytes) -> None:
        """Make `key` hold `content` (temp file and rename; nothing when it holds it already)."""

    def remove(self, key: str) -> None:
        """Remove the file or tree at `key`, if any (a delete carried out for one that died)."""

    def remove_file(self, key: str) -> None:
        """Remove `key` if it is a file (a replayed delete: a prefix's files the log names are
        each replayed themselves, and others were durable before the epoch, so at most come back)."""

    def read(self, key: str) -> bytes | None:
        """What `key` holds now; None for nothing."""


class WriteAheadLog:
    """The log of one store root, shared by every driver of that root in this process (`of`).

    `prepare`, `apply` and `place` callbacks run under the log's lock: they read and change files
    and nothing else (no call back into the log)."""

    #: Only while a driver holds one: a store nobody uses any more gives its descriptors back.
    _opened: ClassVar[weakref.WeakValueDictionary[tuple[str, bool], WriteAheadLog]] = weakref.WeakValueDictionary()
    _opened_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def of(cls, root: str, files: Applier, writing: bool = True) -> WriteAheadLog:
        """The log of `root` (an absolute path without a trailing `/`), replayed first if no other
        process has the store open, or if one that began to replay it died. With `writing` False
        (storage.filesystem.write_ahead_log off) this process only replays and empties a log
        that is there, and never writes to it: every process of a store must agree on it."""
        with cls._opened_lock:
            log = cls._opened.get((root, writing))
            if log is None or log._pid != os.getpid():
                log = cls._opened[(root, writing)] = WriteAheadLog(root, files, writing)
            return log

    def __init__(self, root: str, files: Applier, writing: bool) -> None:
        self._root = root
        self._files = files
        self._writing = writing
        self._pid = os.getpid()
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._open_fd: int | None = None
        self._epoch = 0
        self._end = _HEADER_SIZE
        self._applying = 0
        self._replaying = 0
        self._size = 0
        #: Whether this process appended since its last checkpoint: it empties the log at exit.
        self._appended = False
        if os.path.isdir(root):
            try:
                self._open()
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                # A root this process may only read: nothing it writes needs the log (and a write
                # tries to open it again, and fails as the write would).

    def __del__(self) -> None:
        if self._pid == os.getpid():  # a forked child's copies: `_forked` closes them if the child writes
            self._close()

    def _close(self) -> None:
        for fd in (self._fd, self._open_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._open_fd = None

    # -- opening and replay ----------------------------------------------------------------------
    def _open(self) -> None:
        """Open (creating, when writing) the log, say this process has the store open, and replay
        what a crash left if no other process has the store open (the others wait for it), or if
        the one that began to replay it died (the header says so)."""
        open_fd = os.open(f"{self._root}/{OPEN_NAME}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fd = os.open(f"{self._root}/{LOG_NAME}", os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if self._writing else 0),
                         0o600)
        except FileNotFoundError:  # not writing, and no log: nothing to replay
            fcntl.flock(open_fd, fcntl.LOCK_SH)
            self._open_fd = open_fd
            return
        except BaseException:
            os.close(open_fd)
            raise
        try:
            try:
                fcntl.flock(open_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                alone = True
            except BlockingIOError:
                alone = False
                fcntl.flock(open_fd, fcntl.LOCK_SH)  # waits while a lone opener replays
            self._fd = fd
            with self._file_lock():
                self._read_header()
                if self._replaying or (alone and self._end > _HEADER_SIZE):
                    self._replay()
            if alone:
                fcntl.flock(open_fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            os.close(open_fd)
            self._fd = None
            raise
        self._open_fd = open_fd

    def _read_header(self) -> None:
        fd = self._file()
        self._size = os.fstat(fd).st_size
        head = os.pread(fd, _HEADER.size, 0)
        if len(head) == _HEADER.size and head.startswith(_MAGIC):
            _, self._epoch, self._end, self._applying, self._replaying = _HEADER.unpack(head)
            return
        # A new log (or one whose header never reached the disk: then no record of it was
        # flushed either, as a flush writes the header's page too). The epoch starts anywhere, so
        # that no record left in the file from before can be taken for one of ours.
        self._epoch, self._end = int.from_bytes(os.urandom(7), "little") + 1, _HEADER_SIZE
        self._applying = self._replaying = 0
        if self._size < _HEADER_SIZE + FIRST_SIZE:
            self._grow(_HEADER_SIZE + FIRST_SIZE)
        self._write_header(flush=True)
        fsync_dir(Path(self._root))  # the log's own name, before anything relies on it

    def _replay(self) -> None:
        """Each key the epoch's records name, as its last record says; then a checkpoint. The
        header says a replay is under way until the checkpoint: if this process dies, the next
        one to open the store replays, alone or not."""
        fd = self._file()
        self._replaying = 1
        self._write_header(flush=True)
        log = os.pread(fd, self._size, 0)
        last: dict[str, Change] = {}
        for _, body in records(log, self._epoch, _HEADER_SIZE):
            for change in decode(body):
                if change.op != PUT:  # a delete or a placement of a prefix covers its keys
                    under = f"{change.key}/"
                    for key in [k for k in last if k.startswith(under)]:
                        last[key] = Change(change.op, key)
                last[change.key] = change
        for key, change in last.items():
            if change.op == PUT:
                self._files.write(key, change.content or b"")
            elif change.op == DELETE:
                self._files.remove_file(key)
        self._checkpoint()

    def _roll_forward(self) -> None:
        """The process that held the lock before died applying the record the header names (it
        was flushed, or a delete): carry it out, so the files are again as the log says before
        anything else is written or checked."""
        log = os.pread(self._file(), self._size, 0)
        keys: list[str] = []
        try:
            for at, body in records(log, self._epoch, _HEADER_SIZE):
                if at >= self._applying:  # its record, and a large delete's further ones
                    for change in decode(body):
                        keys.append(change.key)
                        if change.op == PUT:
                            self._files.write(change.key, change.content or b"")
                        elif change.op == DELETE:
                            self._files.remove(change.key)
        except Exception:
            # Finishing it failed too (the disk is full): what the files hold is logged instead,
            # and writes go on (a collection may be what frees the disk).
            self._undo(self._applying, keys)
        finally:
            self._applying = 0
            self._write_header(flush=False)

    # -- writing ---------------------------------------------------------------------------------
    def put(self, prepare: Callable[[], Sequence[Change]], apply: Callable[[Sequence[Change]], None]) -> None:
        """Under the lock: `prepare` the puts (a put of what a file holds already is none), log
        them flushed, then `apply` them. If applying fails, what each key holds then is logged
        instead, so a replay does not finish a put the caller was told failed."""
        with self._locked():
            changes = prepare()
            if changes:
                keys = [change.key for change in changes]
                self._applying_record(lambda: self._append(encode(changes), flush=True, applying=True),
                                      lambda: apply(changes), keys)

    def delete(self, keys: Sequence[str], apply: Callable[[], None]) -> None:
        """Log deletes of `keys` (files or prefixes), unflushed, then `apply`."""
        def append() -> None:
            for start in range(0, len(keys), _DELETES_A_RECORD):
                self._append(encode([Change(DELETE, key) for key in keys[start:start + _DELETES_A_RECORD]]),
                             flush=False, applying=start == 0)

        with self._locked():
            self._applying_record(append, apply, [])

    def place(self, keys: Sequence[str], place: Callable[[], None], deleted: Sequence[str] = ()) -> None:
        """Under the lock: `place` (renames that make `keys` durable by their own flushes, and
        remove `deleted`: a move's source), then log that, flushed. Nothing is logged if it fails;
        no other record can come between the rename and its record."""
        with self._locked():
            place()
            try:
                self._append(encode([Change(DELETE, key) for key in deleted] + [Change(PLACED, key) for key in keys]),
                             flush=True)
            except BaseException:
                # The rename is done and visible: a replay must not take it back. A checkpoint
                # makes it durable and retires every record before it (it needs no room).
                self._checkpoint()
                raise

    def _applying_record(self, append: Callable[[], object], apply: Callable[[], None], keys: Sequence[str]) -> None:
        """`append` the record (the header names it as being applied from then on: the next holder
        of the lock finishes it if this process dies meanwhile), then `apply` it. A put that fails
        after its record was written (its flush, or applying it) is undone in the log: `_undo`."""
        self._applying = 0
        try:
            append()
            apply()
        except BaseException:
            if keys and self._applying:  # its record was written (`_append` named it, then flushed)
                self._undo(self._applying, keys)
            raise
        finally:
            self._applying = 0
            self._write_header(flush=False)

    def _undo(self, start: int, keys: Sequence[str]) -> None:
        """The records from `start` on were not carried out as their caller was told: log what
        each of `keys` holds now, so no replay finishes them; if even that fails, the log ends
        before them again (their start is zeroed), as if they never were."""
        try:
            contents = [(key, self._files.read(key)) for key in keys]
            self._append(encode([Change(DELETE, key) if content is None else Change(PUT, key, content)
                                  for key, content in contents]), flush=True)
        except Exception:
            os.pwrite(self._file(), bytes(RECORD_SIZE), start)
            self._end = start
            self._write_header(flush=False)
            with contextlib.suppress(OSError):
                _datasync(self._file())

    def checkpoint_if_written(self) -> None:
        """At this process's exit: if it appended since its last checkpoint, make the files
        durable and empty the log, so a store nobody has open holds no records to replay (a
        restore or a hand-made change is not undone by the next start)."""
        if not self._appended or self._pid != os.getpid() or self._fd is None:
            return
        with self._locked():
            if self._end > _HEADER_SIZE:
                self._checkpoint()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            if self._pid != os.getpid():
                self._forked()
            if self._fd is None:
                os.makedirs(self._root, exist_ok=True)
                self._open()
            with self._file_lock():
                self._read_header()  # another process may have appended or checkpointed
                if self._applying:
                    self._roll_forward()
                yield

    def _forked(self) -> None:
        """In a child made by fork: the descriptors are the parent's (one lock for both), so
        this process opens its own."""
        self._close()
        self._pid = os.getpid()
        self._appended = False

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        fd = self._file()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _file(self) -> int:
        if self._fd is None:
            raise RuntimeError("the write-ahead log is not open")  # a bug: callers open it first
        return self._fd

    def _append(self, body: bytes, flush: bool, applying: bool = False) -> int:
        """Append a record of `body`; where it starts. With `applying`, the same header write names
        it as the record being applied."""
        fd = self._file()
        length = RECORD_SIZE + len(body)
        if self._end + length > self._size:
            if self._end + length <= CAPACITY:
                self._grow(min(CAPACITY, max(2 * self._size, self._end + length)))
            else:
                self._checkpoint()  # a new epoch: the record is made after, with its number
        at = self._end
        os.pwrite(fd, record(self._epoch, body), at)
        self._end += length
        self._appended = True
        if applying:
            self._applying = at
        self._write_header(flush=False)
        if flush:
            _datasync(fd)
        return at

    def _grow(self, size: int) -> None:
        """Zeros up to `size`, flushed with the file's new size: appends below it change no
        metadata, so their flush is the data's alone."""
        fd = self._file()
        zeros = bytes(min(size - self._size, 1 << 20))
        at = self._size
        while at < size:
            at += os.pwrite(fd, zeros[:size - at], at)
        os.fsync(fd)
        self._size = size

    def _write_header(self, flush: bool) -> None:
        fd = self._file()
        os.pwrite(fd, _HEADER.pack(_MAGIC, self._epoch, self._end, self._applying, self._replaying), 0)
        if flush:
            _datasync(fd)

    def _checkpoint(self) -> None:
        """Every file written so far made durable, then a new epoch from the log's start."""
        sync_filesystem(self._file())
        self._epoch += 1
        self._end = _HEADER_SIZE
        self._applying = self._replaying = 0
        self._appended = False
        self._write_header(flush=True)


def _checkpoint_at_exit() -> None:
    for log in list(WriteAheadLog._opened.values()):
        with contextlib.suppress(Exception):  # the process is ending: a replay covers a failure
            log.checkpoint_if_written()


def _after_fork_in_child() -> None:
    """Locks a thread of the parent held at the fork would never be released in the child."""
    WriteAheadLog._opened_lock = threading.Lock()
    for log in list(WriteAheadLog._opened.values()):
        log._thread_lock = threading.Lock()


atexit.register(_checkpoint_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)



