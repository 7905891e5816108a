"""The filesystem driver's operations on paths (no keys): files compared, written without a
flush (for content the write-ahead log made durable), removed alone, as trees or in parallel
batches, walked and listed in key order. storage.driver.fs and its log's replay use them."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import PathNotFound
from .fslog import HIDDEN_PREFIX
from .fswriters import TEMP_PREFIX, fsync_dir


def same(path: str, data: bytes | bytearray) -> bool:
    """Whether the file at `path` holds exactly `data` (any doubt: False)."""
    try:
        if os.stat(path).st_size != len(data):
            return False
        with open(path, "rb") as f:
            return f.read(len(data) + 1) == data
    except OSError:
        return False


def holds(path: str, data: bytes | bytearray, logged: bool) -> bool:
    """Whether `path` already holds exactly `data`; if so its modification time is moved to now, as
    a rewrite would. A push rewrites links and tags that are already there (a layer link, a tag
    pushed again): this spares each its flushes. Only the new time is not made durable (after a
    machine crash it may read older, which nothing relies on across a crash: a collection that
    read it died with it). Any doubt answers False, and the caller writes."""
    if not same(path, data):
        return False
    try:
        os.utime(path)
        if not logged:
            # A writer renames only after its fsync, but the rename is durable once the directory
            # is synced, which another writer's put may not have done yet: sync it (no work if it
            # did). With the log, that writer's record is flushed, or checkpointed.
            fsync_dir(Path(path).parent)
        return True
    except OSError:
        return False


def write_unflushed(path: str, data: bytes | bytearray) -> None:
    """Temp file and rename, no flush: for content the write-ahead log made durable first. A delete
    of the directory meanwhile (an atomic writer's cancel removing the blob directory it made)
    is met by writing again, as `create_file` does for the open."""
    directory = os.path.dirname(path)
    for attempt in range(3):
        tmp = f"{directory}/{TEMP_PREFIX}{_unique()}"
        try:
            try:
                fd = os.open(tmp, _NEW_FILE, 0o644)
            except FileNotFoundError:
                os.makedirs(directory, exist_ok=True)
                fd = os.open(tmp, _NEW_FILE, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, path)
            return
        except FileNotFoundError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if attempt == 2:
                raise
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_TEMP_NAMES = itertools.count()
_TEMP_STEM = uuid.uuid4().hex[:16]


def _unique() -> str:
    """A temp file name no other writer uses: this process's random stem, its pid (a forked child
    shares the stem) and a counter; a third of the cost of a uuid4 a put."""
    return f"{_TEMP_STEM}-{os.getpid()}-{next(_TEMP_NAMES)}"


def unlink_file(path: str) -> None:
    """Remove `path` if it is a file (a replayed delete: what a prefix held the log names key by key)."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)


def files_below(top: str) -> Iterator[os.DirEntry[str]]:
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


def sorted_files(directory: str, key: str, bound: str | None, limit: int, found: list[str]) -> None:
    """Append to `found` the keys of the files below `directory` (whose key is `key`) that sort
    after `key + "/" + bound` (all of them when `bound` is None), in string order, until it holds
    `limit`. A directory's entries are ordered by their name, a `/` after a subdirectory's (its keys
    continue so), and subdirectories before the bound are never read."""
    try:
        with os.scandir(directory) as listing:
            entries = []
            for entry in listing:
                if entry.name.startswith(HIDDEN_PREFIX):
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
            sorted_files(f"{directory}/{name}", f"{key}/{name}", inner, limit, found)
        else:
            found.append(f"{key}/{name}")


def delete_file_or_tree(key: str, path: str) -> None:
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
            return
    except (FileNotFoundError, NotADirectoryError):
        raise PathNotFound(key) from None
    _remove_tree(path)


def delete_files(paths: list[str]) -> None:
    """Delete each file; the directory holding it goes too once empty."""
    if len(paths) < _PARALLEL_DELETES * 4:
        _unlink_and_prune(paths)
        return
    # Metadata operations in different directories proceed in parallel in the kernel (and
    # release the GIL): a collection's batch of a thousand goes several times faster.
    share = -(-len(paths) // _PARALLEL_DELETES)
    with ThreadPoolExecutor(max_workers=_PARALLEL_DELETES) as pool:
        list(pool.map(_unlink_and_prune, [paths[at:at + share] for at in range(0, len(paths), share)]))


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
