"""The local-filesystem driver: keys are paths below a root directory.

Atomicity comes from temp file + fsync + rename in the destination directory. Temp files carry
TEMP_PREFIX and are invisible to `list` and `walk`.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InvalidKey, InvalidOffset, PathNotFound, StorageConfigError
from .base import DriverCapabilities, FileInfo, PendingUpload, WriterState
from .fswriters import TEMP_PREFIX, FsAtomicWriter, FsFileWriter, create_file, fsync_dir, lock_exclusive
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


def _holds(path: Path, data: bytes | bytearray) -> bool:
    """Whether `path` already holds exactly `data`; if so its modification time is moved to now, as
    a rewrite would. A push rewrites links and tags that are already there (a layer link, a tag
    pushed again): this spares each its two fsyncs. Only the new time is not made durable (after a
    machine crash it may read older, which nothing relies on across a crash: a collection that
    read it died with it). Any doubt answers False, and the caller writes."""
    try:
        if os.stat(path).st_size != len(data):
            return False
        with open(path, "rb") as f:
            if f.read(len(data) + 1) != data:
                return False
        os.utime(path)
        # A writer renames only after its fsync, but the rename is durable once the directory is
        # synced, which another writer's put may not have done yet: sync it (no work if it did).
        fsync_dir(path.parent)
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class FilesystemOptions:
    """The filesystem driver's options: the directory below which every key is a path."""

    root: str = ""

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
        root = options.root if isinstance(options, FilesystemOptions) else options
        self.root = _usable_root(Path(root))
        self._root_text = str(self.root)

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

    # -- protocol --------------------------------------------------------------------------------
    def get(self, key: str, limit: int | None = None) -> bytes:
        try:
            with open(self._fspath(key), "rb") as f:
                return f.read() if limit is None else f.read(limit)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFound(key) from None

    def put(self, key: str, data: bytes | bytearray) -> None:
        path = self._path(key)
        if _holds(path, data):
            return
        for attempt in range(3):
            tmp = path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
            try:
                with create_file(tmp) as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
                fsync_dir(path.parent)
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
        return FsFileWriter(self._path(key), append, self._path)

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
        return FsAtomicWriter(self._path(key))

    def list(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        try:
            names = sorted(e.name for e in os.scandir(path) if not e.name.startswith(TEMP_PREFIX))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(prefix) from None
        base = prefix.strip("/")
        return [f"{base}/{n}" for n in names]

    def walk(self, prefix: str) -> Iterator[FileInfo]:
        base = len(self._root_text) + 1
        for entry in _files_below(self._fspath(prefix)):
            if entry.name.startswith(TEMP_PREFIX):
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
        _sorted_files(self._fspath(prefix), base, bound, limit, keys)
        return keys

    def move(self, source: str, destination: str) -> None:
        src, dst = self._path(source), self._path(destination)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            f = open(src, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise PathNotFound(source) from None
        except IsADirectoryError:
            os.replace(src, dst)
            return
        with f:
            lock_exclusive(f, source)
            os.replace(src, dst)
        # An object is new where it was moved to, as an S3 copy is: garbage collection reads its
        # age from there (a blob adopted from an upload whose last chunk came hours ago is young).
        with contextlib.suppress(FileNotFoundError):
            os.utime(dst)
        fsync_dir(dst.parent)

    def delete(self, key: str) -> None:
        path = self._fspath(key)
        try:
            is_dir = stat.S_ISDIR(os.lstat(path).st_mode)
            if not is_dir:
                os.unlink(path)
                return
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(key) from None
        _remove_tree(path)

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete each file; the directory holding it goes too once empty (a link's or a blob's
        own directory), so that a listing of the parent no longer names it."""
        paths = [self._fspath(key) for key in keys]
        if len(paths) < _PARALLEL_DELETES * 4:
            _unlink_and_prune(paths)
            return
        # Metadata operations in different directories proceed in parallel in the kernel (and
        # release the GIL): a collection's batch of a thousand goes several times faster.
        share = -(-len(paths) // _PARALLEL_DELETES)
        with ThreadPoolExecutor(max_workers=_PARALLEL_DELETES) as pool:
            list(pool.map(_unlink_and_prune, [paths[at:at + share] for at in range(0, len(paths), share)]))

    def url_for(self, key: str, method: str = "GET", expires_in: int = 1200) -> str | None:
        return None

    def remove_stale_temp(self, cutoff: float, spare: Callable[[str], bool] | None = None) -> int:
        """Temp files (TEMP_PREFIX) anywhere under the root whose last write is older than `cutoff`:
        what `put` or `check` left when the process died between creating and renaming them. The
        directories `put` created for them stay (removing one could race a `put` into it): walks
        skip empty directories, and the tag listing skips tags without a link (storage.tags)."""
        removed = 0
        base = len(self._root_text) + 1
        for entry in _files_below(self._root_text):
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


def _files_below(top: str) -> Iterator[os.DirEntry[str]]:
    """Every file below `top` (temp files included), depth first, by os.scandir and plain strings:
    a collection walks every key of the store, and building a Path per file costs more than the
    stat. A directory's type comes from the listing itself, so only callers that need a file's
    size or age pay for its stat."""
    pending = [top]
    while pending:
        directory = pending.pop()
        try:
            entries = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed while walking
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                        continue
                except FileNotFoundError:
                    continue  # removed while walking
                yield entry


def _sorted_files(directory: str, key: str, bound: str | None, limit: int, found: list[str]) -> None:
    """Append to `found` the keys of the files below `directory` (whose key is `key`) that sort
    after `key + "/" + bound` (all of them when `bound` is None), in string order, until it holds
    `limit`. A directory's entries are ordered by their name, a `/` after a subdirectory's (its keys
    continue so), and subdirectories before the bound are never read."""
    try:
        with os.scandir(directory) as listing:
            entries = []
            for entry in listing:
                if entry.name.startswith(TEMP_PREFIX):
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed meanwhile
                entries.append((f"{entry.name}/" if is_dir else entry.name, entry.name, is_dir))
    except (FileNotFoundError, NotADirectoryError):
        return
    entries.sort()
    for ordered, name, is_dir in entries:
        if len(found) >= limit:
            return
        inner: str | None = None
        if bound is not None:
            if is_dir and bound.startswith(ordered):
                inner = bound[len(ordered):]  # the page starts inside this directory
            elif ordered <= bound:
                continue
        if is_dir:
            _sorted_files(f"{directory}/{name}", f"{key}/{name}", inner, limit, found)
        else:
            found.append(f"{key}/{name}")


def _remove_tree(path: str, passes: int = 5) -> None:
    """Remove a directory and everything below it (a prefix delete). A writer may be putting a file
    into it meanwhile (a push recording a keep in `v1/gc/kept/<collector>` as that collection
    ends): what vanishes under the walk is gone already, and a directory that filled again is
    walked again; after `passes` the writer has won and its file stays (debris the next sweep of
    its owner takes), and OSError says so."""
    def gone_already(_function: Any, _path: str, exc_info: Any) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    for attempt in range(passes):
        try:
            shutil.rmtree(path, onerror=gone_already)
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY or attempt == passes - 1:
                raise


#: Threads deleting at once in a large `delete_many`.
_PARALLEL_DELETES = 8


def _unlink_and_prune(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass  # not empty (or removed meanwhile): it stays
