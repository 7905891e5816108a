"""A driver that tells a callback of every delete it made: `DeleteNotifyingDriver(driver, deleted)`.

`deleted(key)` is called once the call is over, whether it succeeded or not (a failed delete may
have removed some of it), for `delete` (an object or everything below a prefix), each key of
`delete_many`, and a `move`'s source. What a process remembers about keys (storage.recent_links)
stays honest by wrapping its driver in one: every delete passes through it, whatever code made it.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

from .base import AtomicWriter, FileInfo, FileWriter, PendingUpload, StorageDriver, WriterState


class DeleteNotifyingDriver:
    def __init__(self, driver: StorageDriver, deleted: Callable[[str], None]) -> None:
        self.inner = driver
        self.deleted = deleted
        self.name = driver.name
        self.capabilities = driver.capabilities

    def delete(self, key: str) -> None:
        try:
            self.inner.delete(key)
        finally:
            self.deleted(key)

    def delete_many(self, keys: Sequence[str]) -> None:
        try:
            self.inner.delete_many(keys)
        finally:
            for key in keys:
                self.deleted(key)

    def move(self, source: str, destination: str) -> None:
        try:
            self.inner.move(source, destination)
        finally:
            self.deleted(source)

    # -- the rest of the protocol, as it is ------------------------------------------------------
    def get(self, key: str, limit: int | None = None) -> bytes:
        return self.inner.get(key, limit)

    def put(self, key: str, data: bytes | bytearray) -> None:
        self.inner.put(key, data)

    def put_many(self, items: Sequence[tuple[str, bytes | bytearray]]) -> None:
        self.inner.put_many(items)

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
