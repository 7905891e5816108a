"""A blob's first fetch: the upstream's bytes go into storage and to the client at the same time.

The fetch runs in a thread (distclient and storage are synchronous) and writes into a `TeeSink`:
every chunk goes into the storage fill (`RepositoryBlobs.fill`, invisible until verified) and, through
a `Channel`, to the client's response on the event loop. The response holds back the last chunk it
got until the fill committed, that is until size and digest verified: on a mismatch, or when the
fetch had to start over after the client already got bytes, the connection is cut (the server's
ABORT extension) so the client never sees a complete body of wrong bytes. A client that goes
away, or reads slowly, never loses the cache its bytes: the fetch goes on (what the channel cannot
pass on is dropped once the client is gone) and others waiting for the same blob get it from storage.
Memory: at most `depth` chunks (distclient's reads, up to 1 MiB each) wait in the channel.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from distclient import ClientError, VerificationError
from ocispec.digest import Digest, SizeExceeded
from ocispec.errors import ErrorCode
from storage import BlobFill, DigestInvalid, Repository, SizeInvalid, StorageError

from ..errors import RegistryError
from ..server import ABORT
from .answers import upstream_failure
from .upstream import Upstream


@dataclass(frozen=True)
class Started:
    size: int


@dataclass(frozen=True)
class Chunk:
    data: bytes


@dataclass(frozen=True)
class Ended:
    """The fetch ended: committed (`failure` None), or failed with the client's answer."""

    failure: RegistryError | None = None


@dataclass(frozen=True)
class Cut:
    """What the client already got cannot be vouched for (the fetch started over): end it now."""


Event = Started | Chunk | Ended | Cut


class Channel:
    """From the fetching thread to the response on the loop; bounded by `depth` chunks in flight.

    A client that takes no chunk for `stall_seconds` is let go: the fetch goes on for the store, and
    the client's connection is cut after what it already has (it retries, and gets the stored blob)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = 4, stall_seconds: float = 60.0) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._room = threading.Semaphore(depth)
        self._gone = threading.Event()
        self._stall_seconds = stall_seconds
        self.sent = 0  # bytes handed to the client's side (thread side)

    # -- the fetching thread -------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        if isinstance(event, Chunk):
            if self._gone.is_set():
                return
            waited = 0.0
            while not self._room.acquire(timeout=1.0):
                waited += 1.0
                if self._gone.is_set():
                    return
                if waited >= self._stall_seconds:
                    self._gone.set()
                    self._post(Cut())  # after the chunks it has: it must not get a body with a hole
                    return
            self.sent += len(event.data)
        self._post(event)

    def _post(self, event: Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server is stopping, nobody listens
            self._gone.set()

    # -- the response --------------------------------------------------------------------------
    async def next(self) -> Event:
        event = await self._queue.get()
        if isinstance(event, Chunk):
            self._room.release()
        return event

    def leave(self) -> None:
        """The client's side stops listening; the fetch goes on without it."""
        self._gone.set()


class TeeSink:
    """distclient's BlobSink writing into a storage fill and a channel at once."""

    def __init__(self, fill: BlobFill, channel: Channel | None) -> None:
        self._fill = fill
        self._channel = channel

    @property
    def offset(self) -> int:
        return self._fill.offset

    @property
    def resumed_from(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        try:
            self._fill.write(data)
        except SizeInvalid:
            raise SizeExceeded(f"{self._fill.digest}: more bytes than its {self._fill.size}") from None
        if self._channel is not None:
            self._channel.emit(Chunk(data))

    def reset(self) -> None:
        self._fill.reset()
        if self._channel is not None and self._channel.sent:
            self._channel.emit(Cut())

    def commit(self) -> None:
        try:
            self._fill.commit()
        except (DigestInvalid, SizeInvalid) as exc:
            raise VerificationError(f"blob {self._fill.digest} from upstream failed verification: {exc}") from None


class TeeResponse(Response):
    """The client's side of a first fetch: headers once the upstream said the size, then the chunks,
    the last one only after the blob verified."""

    def __init__(self, channel: Channel, digest: Digest, headers: dict[str, str],
                 stored: Callable[[], Awaitable[Response]]) -> None:
        """`stored()` answers from the store, for a fetch that found the blob already there."""
        super().__init__(status_code=200)
        self.channel = channel
        self.digest = digest
        self.extra_headers = headers
        self.stored = stored

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            first = await self.channel.next()
            while not isinstance(first, (Started, Ended)):  # nothing was sent yet: a Cut means nothing
                first = await self.channel.next()
            if isinstance(first, Ended):
                if first.failure is not None:  # before any byte: the OCI error JSON, as for any failure
                    raise first.failure
                response = await self.stored()  # another fetch stored it just before this one began
                await response(scope, receive, send)
                return
            headers = {**self.extra_headers, "Content-Length": str(first.size)}
            raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            await send({"type": "http.response.start", "status": 200, "headers": raw})
            held: bytes | None = None
            while True:
                event = await self.channel.next()
                if isinstance(event, Chunk):
                    if held is not None:
                        await send({"type": "http.response.body", "body": held, "more_body": True})
                    held = event.data
                elif isinstance(event, Ended) and event.failure is None:
                    await send({"type": "http.response.body", "body": held or b"", "more_body": False})
                    return
                elif isinstance(event, (Ended, Cut)):
                    abort = scope.get("extensions", {}).get(ABORT)
                    if abort is not None:
                        abort()
                    return
        finally:
            self.channel.leave()


def fetch_into(upstream: Upstream, remote: str, repo: Repository, digest: Digest, channel: Channel | None) -> None:
    """Fetch blob `digest` of upstream repository `remote` into `repo` (run in a thread), telling
    `channel` (when given) the size, the bytes and the end. Raises the client's answer on failure."""
    def end(failure: RegistryError | None) -> None:
        if channel is not None:
            channel.emit(Ended(failure))

    what = f"blob {digest} of {repo.name}"
    try:
        if repo.blobs.adopt_existing(digest):  # a fetch that ended a moment ago, here or on another replica
            end(None)
            return
        size = upstream.blob_size(remote, digest)
        if channel is not None:
            channel.emit(Started(size))
        fill = repo.blobs.fill(digest, size)
        try:
            upstream.fetch_blob(remote, digest, size, TeeSink(fill, channel))
        finally:
            fill.abort()  # nothing after a commit; the partial bytes after a failure
    except ClientError as exc:
        failure = upstream_failure(exc, upstream.host, what, ErrorCode.BLOB_UNKNOWN)
        end(failure)
        raise failure from None
    except StorageError:
        end(RegistryError(ErrorCode.UNAVAILABLE, f"storing {what} failed"))
        raise
    except BaseException:
        end(RegistryError(ErrorCode.UNAVAILABLE, f"fetching {what} failed"))
        raise
    end(None)
