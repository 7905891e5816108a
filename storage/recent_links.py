"""Links this process saw lately, so that serving a blob or a manifest from S3 costs the GET of its
bytes, not also a HEAD of the repository's link every time (`storage.link_cache_seconds`).

What it trades, and what it does not:

- A link deleted by another process (a replica's DELETE, `registry gc` run apart) is still
  believed for at most `ttl` seconds after this process last saw it. A link deleted through this
  process's driver is forgotten at once: `Storage` wraps its driver in `ForgettingDriver`, through
  which every delete passes, so no code path can forget to forget.
- Only what serves content asks it (`RepositoryBlobs`' reads, `ManifestStore.get`). What decides
  whether a push is safe (the checks that keep garbage collection off what a push names,
  `storage.sweeping`) looks at the links themselves.
- Bytes are never believed: a blob whose bytes a collection removed is unknown however recently
  its link was seen (the GET of the bytes finds nothing).

With `ttl` 0 it remembers nothing and every question is a look (the filesystem driver's case:
a link check there costs microseconds).
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

from . import paths
from .driver.base import AtomicWriter, FileInfo, FileWriter, PendingUpload, StorageDriver, WriterState

#: Links remembered at most (about 200 bytes each); beyond it the memory starts over.
MAX_ENTRIES = 100_000


class RecentLinks:
    def __init__(self, ttl: float, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        #: repository → link key → when it was last seen there (clock seconds).
        self._seen: dict[str, dict[str, float]] = {}
        self._count = 0
        #: Moves on with every forget: a look begun before one must not record what it saw.
        self._generation = 0
        self._lock = threading.Lock()

    def present(self, key: str, look: Callable[[], bool]) -> bool:
        """Whether the link at `key` is there: believed if it was seen within `ttl`, else `look()`
        (which asks the driver) decides, and a yes is remembered."""
        if self.ttl <= 0:
            return look()
        scope = paths.link_scope(key)
        if scope is None:
            return look()
        name = scope[0]
        with self._lock:
            seen = self._seen.get(name, {}).get(key)
            if seen is not None and self._clock() - seen < self.ttl:
                return True
            generation = self._generation
        if not look():
            return False
        self._remember(name, key, generation)
        return True

    def written(self, key: str, write: Callable[[], object]) -> None:
        """Run `write` (which puts the link at `key`) and remember the link as seen."""
        if self.ttl <= 0:
            write()
            return
        generation = self._generation
        write()
        scope = paths.link_scope(key)
        if scope is not None:
            self._remember(scope[0], key, generation)

    def forget_deleted(self, key: str) -> None:
        """`key` was deleted (an object, or everything below a prefix): nothing it may have held is
        believed any more."""
        scope = paths.link_scope(key)
        if scope is None or self.ttl <= 0:
            return
        name, nested = scope
        with self._lock:
            self._generation += 1
            doomed = [n for n in self._seen if n == name or n.startswith(f"{name}/")] if nested else [name]
            for repository in doomed:
                self._count -= len(self._seen.pop(repository, {}))

    def _remember(self, name: str, key: str, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # a delete came while it was looked at or written: what was seen may be gone
            if self._count >= self._max_entries:
                self._seen.clear()
                self._count = 0
            links = self._seen.setdefault(name, {})
            if key not in links:
                self._count += 1
            links[key] = self._clock()


class ForgettingDriver:
    """`driver` with every delete (and a move's source) told to `recent` once it is done."""

    def __init__(self, driver: StorageDriver, recent: RecentLinks) -> None:
        self.inner = driver
        self.recent = recent
        self.name = driver.name
        self.capabilities = driver.capabilities

    def delete(self, key: str) -> None:
        try:
            self.inner.delete(key)
        finally:
            self.recent.forget_deleted(key)

    def delete_many(self, keys: Sequence[str]) -> None:
        try:
            self.inner.delete_many(keys)
        finally:
            for key in keys:
                self.recent.forget_deleted(key)

    def move(self, source: str, destination: str) -> None:
        try:
            self.inner.move(source, destination)
        finally:
            self.recent.forget_deleted(source)

    # -- the rest of the protocol, as it is ------------------------------------------------------
    def get(self, key: str, limit: int | None = None) -> bytes:
        return self.inner.get(key, limit)

    def put(self, key: str, data: bytes | bytearray) -> None:
        self.inner.put(key, data)

    def reader(self, key: str, offset: int = 0) -> BinaryIO:
        return self.inner.reader(key, offset)

    def writer(self, key: str, append: bool = False, saved: WriterState | None = None) -> FileWriter:
        return self.inner.writer(key, append, saved)

    def stat(self, key: str) -> FileInfo:
        return self.inner.stat(key)

    def head(self, key: str) -> FileInfo:
        return self.inner.head(key)

    def opened(self, key: str) -> tuple[BinaryIO, int]:
        return self.inner.opened(key)

    def atomic_writer(self, key: str) -> AtomicWriter:
        return self.inner.atomic_writer(key)

    def list(self, prefix: str) -> builtins.list[str]:
        return self.inner.list(prefix)

    def walk(self, prefix: str) -> Iterator[FileInfo]:
        return self.inner.walk(prefix)

    def list_page(self, prefix: str, start_after: str, limit: int) -> builtins.list[str]:
        return self.inner.list_page(prefix, start_after, limit)

    def url_for(self, key: str, method: str = "GET", expires_in: int = 1200) -> str | None:
        return self.inner.url_for(key, method, expires_in)

    def check(self) -> None:
        self.inner.check()

    def remove_stale_temp(self, cutoff: float, spare: Callable[[str], bool] | None = None) -> int:
        return self.inner.remove_stale_temp(cutoff, spare)

    def pending_uploads(self) -> Iterator[PendingUpload]:
        return self.inner.pending_uploads()

    def on_retry(self, callback: Callable[[str], None] | None) -> None:
        self.inner.on_retry(callback)
