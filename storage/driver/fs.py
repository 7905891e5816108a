"""The local-filesystem driver: keys are paths below a root directory.

Atomicity comes from temp file + rename in the destination directory; durability from the
write-ahead log (storage.driver.fslog: a small put's content is in a flushed record before its
file is written) or, without it and for what goes around it, from fsyncing the file and its
directory. Temp files carry TEMP_PREFIX, the log HIDDEN_PREFIX: both are invisible to `list` and
`walk`.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InvalidKey, InvalidOffset, PathNotFound, StorageConfigError
from . import fsfiles
from .base import DriverCapabilities, FileInfo, PendingUpload, WriterState
from .fslog import HIDDEN_PREFIX, LARGEST_LOGGED, WriteAheadLog
from .fswriters import TEMP_PREFIX, FsAtomicWriter, FsFileWriter, create_file, fsync_dir, lock_exclusive
from .logrecords import PUT, Change
from .options import options_from_mapping

#: What makes a key (without its leading and trailing `/`) unusable: a `.`, `..` or empty
#: component, a backslash or a NUL.
_BAD_KEY = re.compile(r"(?:^|/)\.{1,2}(?:/|$)|//|\\|\x00")


def _usable_root(root: Path) -> Path:
    """`root` made absolute with its symlinks resolved, or StorageConfigError if it cannot be."""
    try:
        resolved = root.resolve()
        resolved.stat()
    except FileNotFoundError:
        return resolved
    except RuntimeError:  # Python < 3.13 reports a symlink loop in resolve() this way
        raise StorageConfigError(f"storage root {root} cannot be used: {os.strerror(errno.ELOOP)}") from None
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENAMETOOLONG):
            return resolved  # e.g. not permitted or below a file: `check` says so when serving
        raise StorageConfigError(f"storage root {root} cannot be used: {exc.strerror}") from None
    return resolved


@dataclass(frozen=True)
class FilesystemOptions:
    """The filesystem driver's options: the directory below which every key is a path."""

    root: str = ""
    #: Make small writes durable through one write-ahead log below the root (storage.driver.fslog):
    #: one flush for several files (a manifest push: two) instead of two a file. Off: each file is
    #: flushed itself (a root on a filesystem without flock, such as some network filesystems).
    write_ahead_log: bool = True

    def __post_init__(self) -> None:
        if not self.root:
            raise StorageConfigError("storage.filesystem.root is required")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> FilesystemOptions:
        return options_from_mapping(cls, values, "storage.filesystem")


class FilesystemDriver:
    name = "filesystem"
    #: Small reads and stats come from the page cache in microseconds (registry.handlers.base
    #: run_small makes them inline); readers are plain files; writers append to the file a move
    #: takes, so `move` takes the writers' lock (FsFileWriter). No URLs: files are not on the web.
    capabilities = DriverCapabilities(fast_small_reads=True, sendfile=True, appends_in_place=True)

    def __init__(self, options: FilesystemOptions | str | os.PathLike[str]) -> None:
        """`FilesystemDriver(FilesystemOptions(root))`, or just the root. StorageConfigError for a
        root no call could ever use (a symlink loop, a name longer than the system allows); one
        that is missing is fine (`check` creates it), one that is not writable `check` reports."""
        if not isinstance(options, FilesystemOptions):
            options = FilesystemOptions(str(options))
        self.root = _usable_root(Path(options.root))
        self._root_text = str(self.root)
        # Without the log this process still replays and empties one left there (the setting
        # turned off after a crash), and holds the store open so that no other process replays.
        log = WriteAheadLog.of(self._root_text, _LoggedFiles(self), writing=options.write_ahead_log)
        self._log = log if options.write_ahead_log else None
        self._open_store = log

    # -- keys ------------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return Path(self._fspath(key))

    def _fspath(self, key: str) -> str:
        """The file a key names, as a string (no Path: a manifest request makes several calls, and
        building a Path costs more than the stat); InvalidKey for a key that could leave the root or
        name a directory ambiguously (`.`, `..` or empty components, backslashes, NUL)."""
        inner = key.strip("/")
        if not inner or _BAD_KEY.search(inner):
            raise InvalidKey(f"invalid storage key {key!r}")
        return f"{self._root_text}/{inner}"

    def _placing(self, key: str, place: Callable[[], None], deleted: str | None = None) -> None:
        """Run `place` (renames that make `key` durable by their own flushes; `deleted` goes: a
        move's source) so that no logged write comes between it and its record."""
        if self._log is None:
            place()
        else:
            self._log.place([key.strip("/")], place, [deleted.strip("/")] if deleted else [])

    # -- protocol --------------------------------------------------------------------------------
    def get(self, key: str, limit: int | None = None) -> bytes:
        try:
            with open(self._fspath(key), "rb") as f:
                return f.read() if limit is None else f.read(limit)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFound(key) from None

    def put(self, key: str, data: bytes | bytearray) -> None:
        self.put_many([(key, data)])

    def put_many(self, items: Sequence[tuple[str, bytes | bytearray]]) -> None:
        log = self._log
        paths = [self._fspath(key) for key, _ in items]
        if log is None or sum(len(data) for _, data in items) > LARGEST_LOGGED:
            for (key, data), path in zip(items, paths, strict=True):
                self._put_flushed(key, path, data)
            return

        def prepare() -> list[Change]:  # under the log's lock: what holds its content already is no put
            return [Change(PUT, key.strip("/"), bytes(data)) for (key, data), path in zip(items, paths, strict=True)
                    if not fsfiles.holds(path, data, logged=True)]

        def apply(changes: Sequence[Change]) -> None:
            for change in changes:
                fsfiles.write_unflushed(self._fspath(change.key), change.content or b"")

        log.put(prepare, apply)

    def _put_flushed(self, key: str, path_text: str, data: bytes | bytearray) -> None:
        """A put that flushes the file and its directory itself (no log, or too large for it),
        then says so to the log."""
        path = Path(path_text)
        if fsfiles.holds(path_text, data, logged=False):
            return
        for attempt in range(3):
            tmp = path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
            try:
                with create_file(tmp) as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())

                def place(tmp: Path = tmp) -> None:
                    os.replace(tmp, path)
                    fsync_dir(path.parent)

                self._placing(key, place)
                return
            except FileNotFoundError:
                # A delete of the directory (a prefix delete: a collection withdrawing its
                # `v1/gc/kept/…` while a writer records a keep there) took the temp file, or the
                # renamed file, with it: write it again, as `create_file` does for the open.
                tmp.unlink(missing_ok=True)
                if attempt == 2:
                    raise
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

    def reader(self, key: str, offset: int = 0) -> BinaryIO:
        try:
            f = open(self._fspath(key), "rb")  # noqa: SIM115 - the caller closes it
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFound(key) from None
        if offset:
            size = os.fstat(f.fileno()).st_size
            if offset > size:
                f.close()
                raise InvalidOffset(f"offset {offset} is past the end of {key} ({size} bytes)")
            f.seek(offset)
        return f

    def writer(self, key: str, append: bool = False, saved: WriterState | None = None) -> FsFileWriter:
        # `saved` is ignored: the file is all the state (no `external_writer_state`).
        return FsFileWriter(self._path(key), append, self._path, self._placing)

    def stat(self, key: str) -> FileInfo:
        try:
            st = os.stat(self._fspath(key))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(key) from None
        is_dir = stat.S_ISDIR(st.st_mode)
        return FileInfo(key.strip("/"), 0 if is_dir else st.st_size, st.st_mtime, is_dir)

    def head(self, key: str) -> FileInfo:
        try:
            st = os.stat(self._fspath(key))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(key) from None
        if stat.S_ISDIR(st.st_mode):
            raise PathNotFound(key)
        return FileInfo(key.strip("/"), st.st_size, st.st_mtime)

    def opened(self, key: str) -> tuple[BinaryIO, int]:
        stream = self.reader(key)
        return stream, os.fstat(stream.fileno()).st_size

    def atomic_writer(self, key: str) -> FsAtomicWriter:
        return FsAtomicWriter(self._path(key), lambda place: self._placing(key, place))

    def list(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        try:
            names = sorted(e.name for e in os.scandir(path) if not e.name.startswith(HIDDEN_PREFIX))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(prefix) from None
        base = prefix.strip("/")
        return [f"{base}/{n}" for n in names]

    def walk(self, prefix: str) -> Iterator[FileInfo]:
        base = len(self._root_text) + 1
        for entry in fsfiles.files_below(self._fspath(prefix)):
            if entry.name.startswith(HIDDEN_PREFIX):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while walking
            yield FileInfo(entry.path[base:], st.st_size, st.st_mtime)

    def list_page(self, prefix: str, start_after: str, limit: int) -> builtins.list[str]:
        base = prefix.strip("/")
        keys: list[str] = []
        if limit <= 0:
            return keys
        if start_after.startswith(f"{base}/"):
            bound: str | None = start_after[len(base) + 1:]
        elif start_after < f"{base}/":
            bound = None
        else:
            return keys  # every key below `prefix` sorts before `start_after`
        fsfiles.sorted_files(self._fspath(prefix), base, bound, limit, keys)
        return keys

    def move(self, source: str, destination: str) -> None:
        src, dst = self._path(source), self._path(destination)
        dst.parent.mkdir(parents=True, exist_ok=True)

        def place() -> None:
            os.replace(src, dst)
            # An object is new where it was moved to, as an S3 copy is: garbage collection reads
            # its age from there (a blob adopted from an upload whose last chunk came hours ago
            # is young).
            with contextlib.suppress(FileNotFoundError):
                os.utime(dst)
            fsync_dir(dst.parent)

        try:
            f = open(src, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise PathNotFound(source) from None
        except IsADirectoryError:
            self._placing(destination, place, deleted=source)
            return
        with f:
            lock_exclusive(f, source)
            os.fsync(f.fileno())  # its writer's commit flushed it: no work, unless a caller did not
            self._placing(destination, place, deleted=source)

    def delete(self, key: str) -> None:
        path = self._fspath(key)
        if self._log is None:
            fsfiles.delete_file_or_tree(key, path)
        else:
            self._log.delete([key.strip("/")], lambda: fsfiles.delete_file_or_tree(key, path))

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete each file; the directory holding it goes too once empty (a link's or a blob's
        own directory), so that a listing of the parent no longer names it."""
        paths = [self._fspath(key) for key in keys]
        if self._log is None:
            fsfiles.delete_files(paths)
        else:
            self._log.delete([key.strip("/") for key in keys], lambda: fsfiles.delete_files(paths))

    def url_for(self, key: str, method: str = "GET", expires_in: int = 1200) -> str | None:
        return None

    def remove_stale_temp(self, cutoff: float, spare: Callable[[str], bool] | None = None) -> int:
        """Temp files (TEMP_PREFIX) anywhere under the root whose last write is older than `cutoff`:
        what `put` or `check` left when the process died between creating and renaming them. The
        directories `put` created for them stay (removing one could race a `put` into it): walks
        skip empty directories, and the tag listing skips tags without a link (storage.tags)."""
        removed = 0
        base = len(self._root_text) + 1
        for entry in fsfiles.files_below(self._root_text):
            if not entry.name.startswith(TEMP_PREFIX):
                continue
            if spare is not None and spare(entry.path[base:]):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # renamed into place or removed meanwhile
        return removed

    def pending_uploads(self) -> Iterator[PendingUpload]:
        return iter(())  # a file being appended is a file: walks see it, nothing else holds bytes

    def on_retry(self, callback: Callable[[str], None] | None) -> None:
        return None  # the kernel's calls are not retried

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f"{TEMP_PREFIX}probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StorageConfigError(f"storage root {self.root} is not writable: {exc.strerror or exc}") from None


class _LoggedFiles:
    """The write-ahead log's `Applier`: the driver's files, written without flushes."""

    def __init__(self, driver: FilesystemDriver) -> None:
        self._driver = driver

    def write(self, key: str, content: bytes) -> None:
        path = self._driver._fspath(key)
        if not fsfiles.same(path, content):
            fsfiles.write_unflushed(path, content)

    def remove(self, key: str) -> None:
        with contextlib.suppress(PathNotFound):
            fsfiles.delete_file_or_tree(key, self._driver._fspath(key))

    def remove_file(self, key: str) -> None:
        fsfiles.unlink_file(self._driver._fspath(key))

    def read(self, key: str) -> bytes | None:
        try:
            return self._driver.get(key)
        except PathNotFound:
            return None
