"""A blob's first fetch: the upstream's bytes go into storage and to the client at the same time.

The fetch runs in a thread (distclient and storage are synchronous) and writes into a `TeeSink`:
every chunk goes into the storage fill (`RepositoryBlobs.fill`, invisible until verified) and on to
the client. The sink holds back the last chunk until size and digest verified (the fill's running
hash; the durable commit that makes the blob visible follows without the client waiting for it):
on a mismatch, or when the fetch had to start over after the client already got bytes, the
connection is cut (the server's ABORT extension) so the client never sees a complete body of wrong
bytes.

How the bytes reach the client (`ClientStream`): on plain HTTP the fetching thread writes them
straight to the client's socket (the server's RAW_BODY extension: no event-loop hop per chunk, no
copy into the transport's buffer); otherwise (TLS) they are relayed to the response on the event
loop, at most `depth` chunks at a time. Either way a client that goes away, or takes nothing for a
minute, is let go after what it has, and the fetch goes on for the store: others waiting for the
same blob get it from storage. Memory: a few chunks (distclient's reads, up to 1 MiB each).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from distclient import ClientError, VerificationError
from ocispec.digest import Digest, SizeExceeded
from ocispec.errors import ErrorCode
from storage import BlobFill, DigestInvalid, Repository, SizeInvalid, StorageError

from ..errors import RegistryError
from ..server import ABORT, RAW_BODY, ThreadBody
from .answers import upstream_failure
from .upstream import Upstream

log = logging.getLogger("cargobay.proxy")

#: A client that takes nothing for this long is let go (the fetch goes on for the store).
STALL_SECONDS = 60.0


@dataclass(frozen=True)
class Started:
    size: int


@dataclass(frozen=True)
class Chunk:
    data: bytes


@dataclass(frozen=True)
class Ended:
    """The client's side is over: `whole` when it got every byte of a verified, stored blob; else
    it must be cut, with `failure` as the OCI error when nothing was sent yet."""

    whole: bool
    failure: RegistryError | None = None


Event = Started | Chunk | Ended


class ClientStream:
    """The thread's side of the client's response: `started`, `send` (bytes already known to be
    followed by more: never the last chunk), then exactly one `end`. Events reach the response on
    the loop; subclasses decide how the bytes travel."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._gone = threading.Event()
        self.sent = 0

    @property
    def gone(self) -> bool:
        return self._gone.is_set()

    def started(self, size: int) -> None:
        self._post(Started(size))

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def end(self, whole: bool, failure: RegistryError | None = None) -> None:
        self._post(Ended(whole and not self.gone, failure))

    def let_go(self, why: str) -> None:
        """The client cannot get the rest (it went, stalled, or the fetch started over)."""
        if not self._gone.is_set():
            self._gone.set()
            log.info("the client of a blob's first fetch was let go after %d bytes (%s); the fetch goes on",
                     self.sent, why)

    def _post(self, event: Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server is stopping, nobody listens
            self._gone.set()

    # -- the response's side (on the loop) ------------------------------------------------------
    async def next(self) -> Event:
        return await self._events.get()

    def attach(self, body: ThreadBody | None) -> None:
        """The response's headers went out; `body` is where the thread writes (RAW_BODY), if used."""

    def leave(self) -> None:
        self._gone.set()


class RelayStream(ClientStream):
    """Bytes relayed as events to the response, which sends them on the loop (under TLS)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = 4) -> None:
        super().__init__(loop)
        self._room = threading.Semaphore(depth)

    def send(self, data: bytes) -> None:
        waited = 0.0
        while not self.gone and not self._room.acquire(timeout=1.0):
            waited += 1.0
            if waited >= STALL_SECONDS:
                self.let_go("it took nothing for a minute")
        if not self.gone:
            self.sent += len(data)
            self._post(Chunk(data))

    async def next(self) -> Event:
        event = await super().next()
        if isinstance(event, Chunk):
            self._room.release()
        return event


class SocketStream(ClientStream):
    """Bytes written by the fetching thread straight to the client's socket (RAW_BODY)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._attached = threading.Event()
        self._body: ThreadBody | None = None

    def attach(self, body: ThreadBody | None) -> None:
        self._body = body
        if body is None:
            self._gone.set()
        self._attached.set()

    def send(self, data: bytes) -> None:
        if self.gone:
            return
        if not self._attached.wait(STALL_SECONDS) or self._body is None:
            self.let_go("its response never started")
            return
        try:
            self._body.write(data)
        except (OSError, TimeoutError) as exc:
            self.let_go(str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc))
            return
        self.sent += len(data)

    def leave(self) -> None:
        super().leave()
        self._attached.set()


def client_stream(scope: Scope) -> ClientStream:
    """The stream a first fetch's response uses: straight to the socket where the server offers it."""
    loop = asyncio.get_running_loop()
    return SocketStream(loop) if RAW_BODY in scope.get("extensions", {}) else RelayStream(loop)


class TeeSink:
    """distclient's BlobSink writing into a storage fill and, a chunk behind, to the client."""

    def __init__(self, fill: BlobFill, client: ClientStream | None) -> None:
        self._fill = fill
        self._client = client
        self._held: bytes | None = None

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
        if self._client is not None:
            if self._held is not None:
                self._client.send(self._held)
            self._held = data

    def reset(self) -> None:
        self._fill.reset()
        self._held = None
        if self._client is not None and self._client.sent:
            self._client.let_go("the fetch started over")

    def commit(self) -> None:
        if self._client is not None and self._held is not None and self._fill.matches():
            # Every byte is here and is the blob: the client may complete now. Making it durable and
            # visible (fsync, moves, links: a fifth of a cold pull's time) is the store's business.
            self._client.send(self._held)
            self._held = None
        try:
            self._fill.commit()
        except (DigestInvalid, SizeInvalid) as exc:
            raise VerificationError(f"blob {self._fill.digest} from upstream failed verification: {exc}") from None
        if self._client is not None and self._held is not None:
            self._client.send(self._held)  # verified and stored: the last chunk may go
            self._held = None


class TeeResponse(Response):
    """The client's side of a first fetch: headers once the upstream said the size, then the bytes
    (sent by the fetching thread, or relayed here), the end only after the blob verified."""

    def __init__(self, stream: ClientStream, headers: dict[str, str],
                 stored: Callable[[], Awaitable[Response]]) -> None:
        """`stored()` answers from the store, for a fetch that found the blob already there."""
        super().__init__(status_code=200)
        self.stream = stream
        self.extra_headers = headers
        self.stored = stored

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions: dict[str, Any] = scope.get("extensions", {})
        body: ThreadBody | None = None
        try:
            first = await self.stream.next()
            if isinstance(first, Ended):
                if first.failure is not None:  # before any byte: the OCI error JSON, as for any failure
                    raise first.failure
                response = await self.stored()  # another fetch stored it just before this one began
                await response(scope, receive, send)
                return
            if not isinstance(first, Started):  # a stream always starts so; anything else is a bug here
                raise RegistryError(ErrorCode.UNAVAILABLE, "the blob fetch sent no size; try again")
            headers = {**self.extra_headers, "Content-Length": str(first.size)}
            raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            await send({"type": "http.response.start", "status": 200, "headers": raw})
            if RAW_BODY in extensions:
                body = await extensions[RAW_BODY]()
            self.stream.attach(body)
            while True:
                event = await self.stream.next()
                if isinstance(event, Chunk):
                    await send({"type": "http.response.body", "body": event.data, "more_body": True})
                elif isinstance(event, Ended):
                    if body is not None:
                        body.finish()
                        body = None
                    if event.whole:
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                    elif ABORT in extensions:
                        extensions[ABORT]()  # never a complete body of bytes that did not verify
                    return
        finally:
            self.stream.leave()
            if body is not None:
                body.finish()


def fetch_into(upstream: Upstream, remote: str, repo: Repository, digest: Digest, client: ClientStream | None) -> None:
    """Fetch blob `digest` of upstream repository `remote` into `repo` (run in a thread), streaming it
    to `client` when given. Raises the client's answer on failure."""
    def end(whole: bool, failure: RegistryError | None = None) -> None:
        if client is not None:
            client.end(whole, failure)

    what = f"blob {digest} of {repo.name}"
    try:
        if repo.blobs.adopt_existing(digest):  # a fetch that ended a moment ago, here or on another replica
            end(False)  # (nothing was sent: the response answers from the store)
            return
        size = upstream.blob_size(remote, digest)
        if client is not None:
            client.started(size)
        fill = repo.blobs.fill(digest, size)
        try:
            upstream.fetch_blob(remote, digest, size, TeeSink(fill, client))
        finally:
            fill.abort()  # nothing after a commit; the partial bytes after a failure
    except ClientError as exc:
        failure = upstream_failure(exc, upstream.host, what, ErrorCode.BLOB_UNKNOWN)
        end(False, failure)
        raise failure from None
    except StorageError:
        end(False, RegistryError(ErrorCode.UNAVAILABLE, f"storing {what} failed"))
        raise
    except BaseException:
        end(False, RegistryError(ErrorCode.UNAVAILABLE, f"fetching {what} failed"))
        raise
    end(True)
