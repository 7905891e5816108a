"""A driver that tells an observer about every call it makes: `ObservedDriver(driver, observer)`
behaves exactly as `driver` (same name, capabilities, answers and exceptions) and reports each
protocol call's name, duration and exception, and each retry the driver makes to its backend.

The registry times storage with it for its metrics; storage imports nothing of what listens. An
observer's method runs in the thread that made the call (on the event loop for the calls a driver
declares fast), so it must be quick and must not raise.

What is one call: each protocol method, from its call to its return or exception; `walk` and
`pending_uploads` from the first item to the last, counting only the time spent inside the driver
(not the caller's work between items); a writer's `commit`, `close` and `cancel` (as
`writer.commit`, ...). Streaming itself, a reader's `read` and a writer's `write`, is not timed:
it is as fast as the other end, and a call per chunk would cost more than it tells.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Sequence
from time import perf_counter
from typing import BinaryIO, Protocol, TypeVar

from .base import AtomicWriter, FileInfo, FileWriter, PendingUpload, StorageDriver, WriterState

T = TypeVar("T")


class DriverObserver(Protocol):
    def succeeded(self, operation: str, seconds: float) -> None:
        """One call of `operation` returned after `seconds`."""

    def failed(self, operation: str, seconds: float, error: BaseException) -> None:
        """One call of `operation` raised `error` after `seconds`."""

    def retried(self, operation: str) -> None:
        """The driver retried a call to its backend (`operation`: the backend's name for it)."""


class ObservedDriver:
    def __init__(self, driver: StorageDriver, observer: DriverObserver) -> None:
        self.inner = driver
        self.observer = observer
        self.name = driver.name
        self.capabilities = driver.capabilities
        driver.on_retry(observer.retried)

    def timed(self, operation: str, call: Callable[[], T]) -> T:
        started = perf_counter()
        try:
            result = call()
        except BaseException as exc:
            self.observer.failed(operation, perf_counter() - started, exc)
            raise
        self.observer.succeeded(operation, perf_counter() - started)
        return result

    def _timed_items(self, operation: str, items: Callable[[], Iterator[T]]) -> Iterator[T]:
        spent = 0.0
        error: BaseException | None = None
        try:
            started = perf_counter()
            iterator = items()
            while True:
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                finally:
                    spent += perf_counter() - started
                yield item  # the caller's time: not the driver's
                started = perf_counter()
        except GeneratorExit:  # the caller stopped early: the calls made so far succeeded
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            if error is None:
                self.observer.succeeded(operation, spent)
            else:
                self.observer.failed(operation, spent, error)

    # -- the protocol ----------------------------------------------------------------------------
    # `get` and `stat` are what every manifest request makes, inline on a local disk: timed without
    # `timed`'s closure.
    def get(self, key: str, limit: int | None = None) -> bytes:
        started = perf_counter()
        try:
            data = self.inner.get(key, limit)
        except BaseException as exc:
            self.observer.failed("get", perf_counter() - started, exc)
            raise
        self.observer.succeeded("get", perf_counter() - started)
        return data

    def put(self, key: str, data: bytes | bytearray) -> None:
        self.timed("put", lambda: self.inner.put(key, data))

    def put_many(self, items: Sequence[tuple[str, bytes | bytearray]]) -> None:
        self.timed("put_many", lambda: self.inner.put_many(items))

    def reader(self, key: str, offset: int = 0) -> BinaryIO:
        return self.timed("reader", lambda: self.inner.reader(key, offset))

    def writer(self, key: str, append: bool = False, saved: WriterState | None = None) -> FileWriter:
        return ObservedWriter(self.timed("writer", lambda: self.inner.writer(key, append, saved)), self)

    def stat(self, key: str) -> FileInfo:
        started = perf_counter()
        try:
            info = self.inner.stat(key)
        except BaseException as exc:
            self.observer.failed("stat", perf_counter() - started, exc)
            raise
        self.observer.succeeded("stat", perf_counter() - started)
        return info

    def head(self, key: str) -> FileInfo:
        return self.timed("head", lambda: self.inner.head(key))

    def opened(self, key: str) -> tuple[BinaryIO, int]:
        return self.timed("reader", lambda: self.inner.opened(key))

    def atomic_writer(self, key: str) -> AtomicWriter:
        return ObservedAtomicWriter(self.timed("atomic_writer", lambda: self.inner.atomic_writer(key)), self)

    def list(self, prefix: str) -> list[str]:
        return self.timed("list", lambda: self.inner.list(prefix))

    def walk(self, prefix: str) -> Iterator[FileInfo]:
        return self._timed_items("walk", lambda: self.inner.walk(prefix))

    def list_page(self, prefix: str, start_after: str, limit: int) -> builtins.list[str]:
        return self.timed("list_page", lambda: self.inner.list_page(prefix, start_after, limit))

    def move(self, source: str, destination: str) -> None:
        self.timed("move", lambda: self.inner.move(source, destination))

    def delete(self, key: str) -> None:
        self.timed("delete", lambda: self.inner.delete(key))

    def delete_many(self, keys: Sequence[str]) -> None:
        self.timed("delete_many", lambda: self.inner.delete_many(keys))

    def url_for(self, key: str, method: str = "GET", expires_in: int = 1200) -> str | None:
        return self.timed("url_for", lambda: self.inner.url_for(key, method, expires_in))

    def check(self) -> None:
        self.timed("check", self.inner.check)

    def remove_stale_temp(self, cutoff: float, spare: Callable[[str], bool] | None = None) -> int:
        return self.timed("remove_stale_temp", lambda: self.inner.remove_stale_temp(cutoff, spare))

    def pending_uploads(self) -> Iterator[PendingUpload]:
        return self._timed_items("pending_uploads", self.inner.pending_uploads)

    def on_retry(self, callback: Callable[[str], None] | None) -> None:
        self.inner.on_retry(callback)


class ObservedAtomicWriter:
    """An atomic writer whose endings (`commit`, `close`, `cancel`) are reported; writes go
    straight through. Its `close` discards, so it is reported as a cancel."""

    _CLOSE = "writer.cancel"

    def __init__(self, writer: AtomicWriter, driver: ObservedDriver) -> None:
        self.inner = writer
        self.driver = driver

    @property
    def size(self) -> int:
        return self.inner.size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return self.inner.write(data)

    def close(self) -> None:
        self.driver.timed(self._CLOSE, self.inner.close)

    def cancel(self) -> None:
        self.driver.timed("writer.cancel", self.inner.cancel)

    def commit(self) -> None:
        self.driver.timed("writer.commit", self.inner.commit)


class ObservedWriter(ObservedAtomicWriter):
    """An appending writer observed as `ObservedAtomicWriter`; its `close` persists (reported as a
    close) and it can commit to another key."""

    _CLOSE = "writer.close"

    def __init__(self, writer: FileWriter, driver: ObservedDriver) -> None:
        super().__init__(writer, driver)
        self.appending = writer

    def commit_to(self, destination: str) -> None:
        self.driver.timed("writer.commit", lambda: self.appending.commit_to(destination))

    def held(self) -> bytes | bytearray | None:
        return self.appending.held()  # no backend call: nothing to time

    def saved_state(self) -> WriterState | None:
        return self.appending.saved_state()  # no backend call: nothing to time

