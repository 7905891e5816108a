"""Links the processes of a server saw lately, so that serving a blob or a manifest from S3 costs the GET of its
bytes, not also a HEAD of the repository's link every time (`storage.link_cache_seconds`).

What it trades, and what it does not:

- A link deleted by another replica, or by `registry gc` run apart, is still believed for at most
  `ttl` seconds after a look found it. One deleted by any process of this `registry serve` is
  believed by none of them from then on: `Storage` wraps its driver in `ForgettingDriver`, through
  which every delete passes (no code path can forget to forget), and the workers share one
  `LinkBoard` (storage.link_board): what one of them found, all of them believe, and a delete
  moves a mark every remembered link must still carry.
- Only what serves content asks it: `RepositoryBlobs`' `open`, `open_sized` and `url_for` on the
  `serving` view, and `ManifestStore.get`. A blob HEAD (how push clients decide to upload), a push's
  checks and the sweep protocol with garbage collection (storage.sweeping) look at links themselves.
- A blob's bytes are never remembered: one whose bytes a collection removed is unknown however
  recently its link was seen (the GET of the bytes finds nothing).

With `ttl` 0 it remembers nothing and every question is a look (the filesystem driver's case:
a link check there costs microseconds).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

from . import paths
from .driver.base import AtomicWriter, FileInfo, FileWriter, PendingUpload, StorageDriver, WriterState
from .link_board import LinkBoard


class RecentLinks:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic, board: LinkBoard | None = None) -> None:
        """`clock` must read alike in every process sharing `board` (`time.monotonic` is the
        system's); without a board this process keeps its own."""
        self.ttl = ttl
        self._clock = clock
        self._board = (board or LinkBoard.private()) if ttl > 0 else None

    def present(self, key: str, look: Callable[[], bool]) -> bool:
        """Whether the link at `key` is there: believed if a look found it within `ttl` and no
        process of this server deleted a link of its repository since, else `look()` (which asks
        the driver) decides, and a yes is remembered."""
        scope = paths.link_scope(key) if self._board is not None else None
        if self._board is None or scope is None:
            return look()
        mark = self._board.mark(scope[0])  # before the look: a delete during it moves the mark
        began = self._clock()  # the age counts from before the look, however long it takes
        if self._board.believes(key, scope[0], began, self.ttl):
            return True
        if not look():
            return False
        self._board.saw(key, began, mark)
        return True

    def written(self, key: str, write: Callable[[], object]) -> None:
        """Run `write` (which puts the link at `key`) and remember the link as seen."""
        scope = paths.link_scope(key) if self._board is not None else None
        if self._board is None or scope is None:
            write()
            return
        mark, began = self._board.mark(scope[0]), self._clock()
        write()
        self._board.saw(key, began, mark)

    def forget_deleted(self, key: str) -> None:
        """`key` was deleted (an object, or everything below a prefix): nothing it may have held is
        believed any more, by any process sharing the board."""
        scope = paths.link_scope(key) if self._board is not None else None
        if self._board is None or scope is None:
            return
        name, nested = scope
        if nested:
            self._board.moved_all()
        else:
            self._board.moved(name)


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
