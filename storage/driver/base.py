"""The storage driver protocol. Everything above the driver works against this and nothing else.

Keys are opaque `/`-separated strings built only by `storage.paths`. A "directory" is any prefix
that has objects below it; it exists as long as something is below it.

Contract every driver keeps:
- `put` and `move` are atomic: readers see the old object or the new one, never a torn one.
- `writer(key, append=True)` continues what an earlier writer `close()`d (possibly in another
  process or replica); the key is not readable as a normal object until `commit()`. A driver
  declaring `external_writer_state` also lets the caller keep that state itself (a `WriterState`:
  `writer(key, append=True, saved=...)`, `FileWriter.saved_state`): storage.uploads keeps it in
  the upload's state object, so the driver reads and writes none of its own.
- Readers stream; nothing loads a whole object into memory except `get`, meant for small objects.
- What a driver can do beyond this protocol it declares in `capabilities` (DriverCapabilities),
  set by every driver; callers choose by it and never probe (`getattr`, `fileno()`) for it.
- Missing keys raise `storage.errors.PathNotFound`; a backend that is down raises
  `StorageUnavailable` after the driver's own retries.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class DriverCapabilities:
    """What a driver declares it can do beyond the protocol. Each flag is a promise callers rely
    on, so a driver sets one only when every call it covers keeps it."""

    #: `get`, `stat` and `list` of small objects answer in microseconds without blocking (the page
    #: cache of a local disk), so a caller may make them on an event loop instead of handing them
    #: to a thread. False: every call may wait on the network and runs in a thread.
    fast_small_reads: bool = False
    #: `url_for` can return a URL the client fetches directly; False: it always returns None.
    presigned_urls: bool = False
    #: `reader` returns OS files (a real `fileno()`, positioned at the offset) that a server may
    #: hand to sendfile(2).
    sendfile: bool = False
    #: A writer still open on a key keeps appending to the very object a `move` takes (a file's
    #: inode), so callers move an upload out of writers' reach before verifying it; `move` refuses
    #: with ObjectBusy while a writer is open (see storage.uploads).
    appends_in_place: bool = False
    #: An appending writer's state can be kept by its caller: `writer(key, append=True, saved=…)`
    #: continues from what an earlier writer's `saved_state()` handed over, and the driver then
    #: reads and writes no state of its own (S3: no sidecar: a GET, a PUT and a DELETE less a
    #: session). False: the object is all the state (a file): `saved` is ignored, `saved_state()`
    #: is None.
    external_writer_state: bool = False


@dataclass(slots=True)
class WriterState:
    """An appending writer's state, kept by its caller (`DriverCapabilities.external_writer_state`).

    `header` is small and JSON-able: what the driver needs to continue (on S3 the multipart upload
    and its parts); `tail` the bytes written that the backend holds nowhere else yet (on S3 under
    a part: up to one). `WriterState()` is a key nothing was written to. The tail changes hands
    without a copy: a writer opened with a state takes its tail over as its buffer, and the state
    `saved_state()` hands over is the writer's buffer, the caller's from then on (to write out, or
    to prefix in place). Neither side uses a tail it handed on.
    """

    header: dict[str, Any] = field(default_factory=dict)
    tail: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True, slots=True)
class FileInfo:
    key: str
    size: int
    modified: float  # seconds since the epoch
    is_dir: bool = False


@dataclass(frozen=True, slots=True)
class PendingUpload:
    """An upload the backend holds open (an S3 multipart upload): invisible to `list` and `walk`,
    its parts kept (and billed) until it is completed or aborted."""

    key: str
    upload_id: str
    initiated: float  # seconds since the epoch
    #: This driver's saved writer state for `key` names it: `writer(key, append=True)` continues it
    #: (False where the caller keeps the state, `DriverCapabilities.external_writer_state`: the
    #: caller knows).
    resumable: bool


@runtime_checkable
class AtomicWriter(Protocol):
    """A write that appears at its key only at `commit()` (`StorageDriver.atomic_writer`)."""

    @property
    def size(self) -> int: ...

    def write(self, data: bytes | bytearray | memoryview) -> int: ...

    def close(self) -> None:
        """Discard what was written (it never became visible)."""

    def cancel(self) -> None:
        """Discard what was written."""

    def commit(self) -> None:
        """Make the bytes appear at the key, all at once. `close()` afterwards is a no-op."""


@runtime_checkable
class FileWriter(Protocol):
    """An appending writer. `size` counts every byte of the object, earlier sessions included."""

    @property
    def size(self) -> int: ...

    def write(self, data: bytes | bytearray | memoryview) -> int: ...

    def close(self) -> None:
        """Persist what was written so that a later `writer(key, append=True)` can continue."""

    def cancel(self) -> None:
        """Discard the object, including what earlier sessions persisted (a writer opened with
        `saved`: what its state names; the caller removes that state and the key)."""

    def commit(self) -> None:
        """Finish: the key becomes a normal object. `close()` afterwards is a no-op."""

    def commit_to(self, destination: str) -> None:
        """Finish, making the bytes appear at `destination` instead (atomically, replacing what is
        there), and the key gone: `commit` and `move` in one, without the copy where the backend
        can avoid it (S3: bytes that never made a part are PUT there directly). What appears is
        exactly the `size` bytes this writer counted: where another writer may have appended to
        the key (files), ObjectBusy instead of finishing anything. A writer opened with `saved` may leave
        an object at the key (S3: parts completed there and copied on): the caller removes it
        with the state it keeps."""

    def held(self) -> bytes | bytearray | None:
        """Every byte of the object when this writer holds them all in memory (S3: an upload whose
        bytes never made a part, continued from the state that keeps them), exactly what
        `commit_to` would put at its destination; None where they lie elsewhere (a file, parts),
        to be read back for hashing."""

    def saved_state(self) -> WriterState | None:
        """After `close()` of a writer opened with `saved` (`DriverCapabilities.external_writer_state`):
        what the caller must keep for `writer(key, append=True, saved=...)` to continue where this
        one stopped, handed over once (a second call is None: the writer keeps no reference to its
        tail); None when there is nothing new to keep (nothing was written, or the driver keeps its
        state itself). Until the caller stored it, the previous state stays valid: a crash in
        between loses only this session's bytes, as a crash before its `close()` would."""


@runtime_checkable
class StorageDriver(Protocol):
    name: str
    capabilities: DriverCapabilities

    def get(self, key: str, limit: int | None = None) -> bytes:
        """The whole content of a small object; with `limit`, its first `limit` bytes at most (S3:
        a ranged GET, so the rest is never sent and the connection goes back to the pool)."""

    def put(self, key: str, data: bytes | bytearray) -> None:
        """Atomically create or replace a small object."""

    def put_many(self, items: Sequence[tuple[str, bytes | bytearray]]) -> None:
        """`put` each, in order: when it returns all are durable, and a crash before then leaves
        each either as it was or as put. Where the driver can (the filesystem's write-ahead log),
        one flush makes them all durable instead of one each."""

    def reader(self, key: str, offset: int = 0) -> BinaryIO:
        """A stream of the object from `offset`; the caller closes it. Raises InvalidOffset past EOF."""

    def writer(self, key: str, append: bool = False, saved: WriterState | None = None) -> FileWriter:
        """An appending writer (`append`: continue what is there). `saved` (only with `append`, on a
        driver declaring `external_writer_state`; ignored elsewhere): the caller keeps the writer's
        state, `WriterState()` for a key nothing was written to yet, else what `saved_state()`
        handed over (its tail is taken over). CorruptState when the driver cannot read it."""

    def stat(self, key: str) -> FileInfo:
        """Size and mtime of an object, or `is_dir=True` for a prefix with objects below it."""

    def head(self, key: str) -> FileInfo:
        """Size and mtime of an object, in one backend call (S3: one HEAD): PathNotFound for a
        prefix or nothing. An appending writer's uncommitted key is not looked for (S3 keeps it
        apart: PathNotFound; on disk it is the file itself). What existence checks of links and
        blobs use, where `stat`'s fallbacks cost a miss two more calls on S3."""

    def opened(self, key: str) -> tuple[BinaryIO, int]:
        """`reader(key)` and the object's size, from the same backend call (S3: one GET)."""

    def atomic_writer(self, key: str) -> AtomicWriter:
        """A writer whose bytes appear at `key` only at `commit()`, all at once (replacing what is
        there); `close()` and `cancel()` discard them, and a crash leaves nothing visible, only
        debris `remove_stale_temp` takes (a temp file; an S3 multipart upload no state names). Not
        resumable: for bodies that arrive whole (storage.ingest)."""

    def list(self, prefix: str) -> list[str]:
        """Full keys of the direct children (objects and prefixes) of `prefix`, sorted.
        Raises PathNotFound when nothing is below `prefix`."""

    def walk(self, prefix: str) -> Iterator[FileInfo]:
        """Every object (not prefixes) below `prefix`, recursively, in no guaranteed order."""

    def list_page(self, prefix: str, start_after: str, limit: int) -> builtins.list[str]:
        """Up to `limit` full keys of objects below `prefix` (recursively), sorted as strings, of
        those that sort after `start_after` (a key, or any string that is not exactly a prefix with
        keys below it: SeaweedFS then skips everything below that prefix; "" for the first); fewer
        than `limit` only when there are no more; [] when nothing is below `prefix`. Sorted as
        strings means on every driver only where no key's component is a prefix of a sibling's
        followed by a character below `/` (SeaweedFS lists directory by directory); the listing
        index's layout never has that. What one page costs does not
        grow with how many keys there are: on S3 one ListObjectsV2 (StartAfter, MaxKeys) per
        `page_size` keys; on disk only the directories on the way from `start_after` to the
        page's last key are read (storage.paths lays the index out so that those are few)."""

    def move(self, source: str, destination: str) -> None:
        """Atomically make `destination` what `source` was and remove `source`."""

    def delete(self, key: str) -> None:
        """Remove an object or everything below a prefix. Raises PathNotFound when nothing is there."""

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove these objects (not prefixes), in as few calls as the backend allows (S3:
        DeleteObjects, 1,000 keys a call); keys already gone are no error."""

    def url_for(self, key: str, method: str = "GET", expires_in: int = 1200) -> str | None:
        """A short-lived URL a client may fetch the object from directly, or None if unsupported."""

    def check(self) -> None:
        """Verify at start-up that the backend is reachable and writable; raise StorageConfigError."""

    def remove_stale_temp(self, cutoff: float, spare: Callable[[str], bool] | None = None) -> int:
        """Remove what writers killed mid-write left behind anywhere in the store (temp files,
        unfinished server-side copies) last written before `cutoff` (seconds since the epoch),
        except below keys for which `spare(key)` is true; returns how many. Age is the only sign
        that a writer is gone, so callers pick `cutoff` well before any write still in flight
        can have begun."""

    def pending_uploads(self) -> Iterator[PendingUpload]:
        """Every upload the backend holds open below this store (for reports; nothing is
        changed); drivers whose writes leave no such thing yield nothing."""

    def on_retry(self, callback: Callable[[str], None] | None) -> None:
        """Have `callback(operation)` called whenever the driver retries a call to its backend
        (`operation` is the backend's name for the call, S3's `PutObject`), from the thread that
        made the call; None stops it. A driver that never retries keeps it and never calls it."""


def iter_chunks(stream: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    """Read `stream` to EOF in chunks of at most `chunk_size` bytes."""
    while True:
        chunk = stream.read(chunk_size)
        if not chunk:
            return
        yield chunk
