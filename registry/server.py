"""uvicorn's HTTP protocol (httptools) with what a registry facing the open network needs on top.

- Blob bodies sent by `sendfile(2)`. Handing the file to the kernel saves the two copies a chunked
  body costs (file → Python → socket), which on loopback is the difference between trailing Go's
  Distribution and beating it, and keeps memory flat however many downloads run. Requests get an
  ASGI scope extension, SENDFILE: an awaitable `(fd, offset, count)` that writes `count` bytes of
  the open file `fd` from `offset` as the response body, after `http.response.start` and before the
  final empty `http.response.body`. Responses fall back to ordinary chunks when it is absent.
- A request-header timeout (uvicorn has none: a client sending one header line every few seconds
  could hold a connection for ever), a cap on header bytes (httptools buffers them without one),
  and a connection limit that first closes idle keep-alive connections and otherwise answers 503
  with the OCI error JSON.
- Bodies that end wrong: a client that half-closes before sending the Content-Length it declared,
  or sends more than it declared, gets the OCI error JSON (400 SIZE_INVALID) instead of uvicorn's
  `400 text/plain` or a silently shortened body. The protocol records what it saw in the scope
  extension BODY_ERROR; `registry.app` turns it into the error when the handler reads the body's end.
- A response can be cut off (scope extension ABORT): the connection closes without the rest of the
  body, for bytes that turned out wrong after they started going out.
- Request bodies reach the application as the chunks the parser made, each one ASGI message, not
  appended to a buffer that is then copied into each message: two copies of every uploaded byte on
  the event loop, which was most of its work in an upload (`QueuedBodyCycle`).
- Malformed requests get the OCI error JSON; a TLS handshake on the plain-HTTP port is logged once
  per client address with what to do about it, instead of a warning per attempt.

This is the one module that knows uvicorn's internals (the transport, the request cycle, the
parser callbacks); keep it that way.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import select
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

import httptools
from starlette.types import Receive, Scope, Send
from uvicorn._types import ASGIReceiveEvent
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from ocispec.errors import ErrorCode

from .errors import error_body, error_response
from .requestinfo import PEER

SENDFILE = "cargobay.sendfile"
#: scope extension: a callable that cuts the connection at once, mid-response, so the client sees a
#: body that ended before its Content-Length (or without its last chunk), never a complete one; for
#: bytes streamed before they could be verified (the pull-through cache's first fetch of a blob).
ABORT = "cargobay.abort"
#: scope extension: `await raw_body()` → a `ThreadBody` (or None when the client already went): after
#: `http.response.start`, a writer of the response body that one other thread may call with blocking
#: writes straight to the socket (no event loop hop per chunk, no transport buffer copy); the
#: response calls `finish()` on the loop when that thread is done, then sends the final empty body.
RAW_BODY = "cargobay.raw_body"
BODY_ERROR = "cargobay.body_error"  # scope extension: why the request body cannot be trusted (a message)
# scope extension PEER (registry.requestinfo, which trusts a request id only from a trusted proxy):
# the address of the connection's other end, before any X-Forwarded-For rewrite.
STALL_SECONDS = 120.0  # a client that takes no bytes for this long is dropped
MAX_HEADER_BYTES = 1 << 20  # request line and headers together, as Go's net/http allows by default
TLS_HANDSHAKE = 0x16  # first byte of a TLS record carrying a handshake (ClientHello); never starts an HTTP request

log = logging.getLogger("cargobay.registry")


@dataclass(frozen=True)
class ConnectionLimits:
    """What `http.header_timeout` and `http.max_connections` say (0: no connection limit)."""

    header_timeout: float = 10.0
    max_connections: int = 0


class Notices:
    """Log a line once per (kind, client address): a misconfigured client retrying every second
    must not fill the log. Remembers the most recent `size` pairs (per worker process)."""

    def __init__(self, size: int = 4096) -> None:
        self._seen: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._size = size

    def first(self, kind: str, address: str) -> bool:
        key = (kind, address)
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True


NOTICES = Notices()


class QueuedBodyCycle(RequestResponseCycle):
    """uvicorn's request cycle with its body kept as a queue of the parser's chunks: `receive`
    hands each one over as it came (no copy), and reading pauses while more than uvicorn's high
    water mark waits in the queue, as it does for uvicorn's own buffer."""

    chunks: collections.deque[bytes]
    queued: int  # bytes in `chunks`

    @classmethod
    def adopt(cls, cycle: RequestResponseCycle) -> QueuedBodyCycle:
        """`cycle`, made one (before its task first called `receive`)."""
        cycle.__class__ = cls
        queued = cast(QueuedBodyCycle, cycle)
        queued.chunks = collections.deque()
        queued.queued = 0
        return queued

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.queued += len(chunk)
        if self.queued > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        self.message_event.set()

    async def receive(self) -> ASGIReceiveEvent:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.chunks and not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body = b""
        if self.chunks:
            body = self.chunks.popleft()
            self.queued -= len(body)
            if not self.chunks:
                self.message_event.clear()  # what set it is in this message (or set it again later)
                self.flow.resume_reading()
        return {"type": "http.request", "body": body, "more_body": self.more_body or bool(self.chunks)}


class RegistryHttpProtocol(HttpToolsProtocol):
    """uvicorn builds one per connection; `limits` is bound with functools.partial (picklable, so
    worker processes get it too)."""

    def __init__(self, *args: Any, limits: ConnectionLimits | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits or ConnectionLimits()
        self.limit_concurrency = None  # uvicorn's own limit answers text/plain; ours is in on_headers_complete
        self._header_timer: asyncio.TimerHandle | None = None
        self._first_bytes = True
        self._header_bytes = 0  # bytes received while the current request's headers are incomplete
        self._body_declared: int | None = None  # Content-Length of the request being read
        self._body_received = 0

    # -- connection --------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()
        if self._over_limit():
            self._close_an_idle_connection()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        """The client closed its sending side. Mid-body that means the body is shorter than declared:
        the handler gets it as an error (BODY_ERROR), and the transport stays open for the answer."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete or self.scheme == "https":
            return None  # nothing in flight (or TLS, where a close_notify ends the connection): close
        cycle.keep_alive = False  # nothing more can come; close once the answer is out
        if cycle.more_body:
            # A client that hung up altogether looks the same from here (its FIN comes first), so
            # this is the hang-up's one log line; the 400 reaches only a client that half-closed.
            if self._body_declared is not None:
                amount = f"{self._body_received} of the {self._body_declared}"
                problem = f"the request body ended after {amount} bytes its Content-Length declared"
            else:
                amount = str(self._body_received)
                problem = f"the chunked request body ended after {amount} bytes, before its last chunk"
            log.info("client hung up during %s %s after %s bytes of the request body", cycle.scope["method"],
                     cycle.scope["path"], amount)
            _record_body_error(cycle.scope, problem)
            cycle.more_body = False
            cycle.message_event.set()
        return True

    def _over_limit(self) -> bool:
        limit = self.limits.max_connections
        if not limit or len(self.connections) <= limit:
            return False
        # Connections closed a moment ago (to make room) leave the set only on the next loop turn.
        return sum(1 for other in self.connections if not _closing(other)) > limit

    def _close_an_idle_connection(self) -> None:
        """Over the limit: make room by closing a connection that waits for its next request."""
        for other in self.connections:
            if (other is not self and isinstance(other, HttpToolsProtocol) and other.timeout_keep_alive_task is not None
                    and not other.transport.is_closing()):
                other.timeout_keep_alive_handler()
                return

    # -- the header timeout ----------------------------------------------------------------------
    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        address = self.client[0] if self.client else "unknown"
        if NOTICES.first("header-timeout", address):
            log.info("closed a connection from %s that sent no complete request headers within %gs "
                     "(http.header_timeout); further ones from there are closed without a log line",
                     address, self.limits.header_timeout)
        self.transport.close()

    # -- parsing -----------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._first_bytes:
            self._first_bytes = False
            if data[:1] == bytes([TLS_HANDSHAKE]) and self.scheme == "http":
                self._tls_on_plain_port()
                return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._malformed(exc)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._header_timer is not None:  # still inside a request's line and headers
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:  # the parser buffers them: bound the memory
                self._refuse(ErrorCode.SIZE_INVALID, f"request headers larger than {MAX_HEADER_BYTES} bytes",
                             status=431)

    def _tls_on_plain_port(self) -> None:
        address = self.client[0] if self.client else "unknown"
        if NOTICES.first("tls", address):
            log.warning("client %s speaks TLS to this plain-HTTP port: configure http.tls (certificate and key), or "
                        "tell the client the registry is insecure (e.g. --tls-verify=false, or insecure = true in "
                        "registries.conf); further attempts from there are not logged", address)
        # Any HTTP answer lets Go clients (docker, podman, skopeo, containerd) say "server gave HTTP
        # response to HTTPS client", the hint their users know.
        self._refuse(ErrorCode.UNSUPPORTED, "this port speaks plain HTTP, not TLS")

    def _malformed(self, exc: Exception) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The request being answered gets the error (if it has not read its body's end yet), and
            # the connection closes after its answer: the parser cannot go on anyway.
            if cycle.more_body:  # inside the body: only a chunked body can be malformed there
                problem = f"the chunked request body is malformed ({exc})"
                cycle.more_body = False
                cycle.message_event.set()
            elif self._body_declared is not None:  # right after the body: more than was declared
                problem = f"the request sent more bytes than its Content-Length ({self._body_declared}) declared"
            else:
                problem = "the request was followed by bytes that are not HTTP"
            _record_body_error(cycle.scope, problem)
            cycle.keep_alive = False
            self.flow.pause_reading()
            return
        address = self.client[0] if self.client else "unknown"
        if NOTICES.first("malformed", address):
            log.info("malformed HTTP request from %s (%s); further ones from there are not logged", address, exc)
        self._refuse(ErrorCode.UNSUPPORTED, "malformed HTTP request")

    def _refuse(self, code: ErrorCode, message: str, status: int = 400) -> None:
        """Answer with the OCI error JSON, outside any request cycle, and close."""
        self._disarm_header_timer()
        body = error_body(code, message)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ndocker-distribution-api-version: registry/2.0\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()  # from the first byte of each further request on the connection
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        self._body_declared = _content_length(self.headers)
        self._body_received = 0
        overloaded = self._over_limit()
        if overloaded:
            app, self.app = self.app, _overloaded
        try:
            super().on_headers_complete()
        finally:
            if overloaded:
                self.app = app
        # The request task was only scheduled, not run: its scope (this very dict) still gets these,
        # and the cycle its body queue (the task has not called `receive` yet).
        self.cycle = QueuedBodyCycle.adopt(self.cycle)
        extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
        if self.scheme == "http":  # under TLS the bytes must go through the transport's encryption
            extensions[SENDFILE] = functools.partial(_send_file, self, self.cycle)
            extensions[RAW_BODY] = functools.partial(_raw_body, self, self.cycle)
        extensions[ABORT] = functools.partial(_abandon, self.transport, self.cycle)
        if self.client is not None:
            extensions[PEER] = self.client[0]

    def on_body(self, body: bytes) -> None:
        self._body_received += len(body)
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cast(QueuedBodyCycle, cycle).add(body)  # every cycle is one (on_headers_complete)


def _closing(protocol: Any) -> bool:
    transport = getattr(protocol, "transport", None)
    return transport is None or transport.is_closing()


def _record_body_error(scope: Any, problem: str) -> None:
    extensions: dict[str, Any] = scope.setdefault("extensions", {})
    extensions.setdefault(BODY_ERROR, problem)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the parser refuses it anyway
    return None


async def _overloaded(scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(ErrorCode.UNAVAILABLE, "too many connections; retry shortly",
                              headers={"Retry-After": "1", "Connection": "close"}, method=scope.get("method", "GET"))
    await response(scope, receive, send)


async def _send_file(protocol: HttpToolsProtocol, cycle: Any, fd: int, offset: int, count: int) -> None:
    """The SENDFILE extension. A client that goes away (or stops reading for STALL_SECONDS) ends
    the response: one log line, the connection closed, and the rest of the response dropped by
    uvicorn (the cycle counts as disconnected), never an exception into the application."""
    transport = protocol.transport
    sock = transport.get_extra_info("socket")
    if sock is None:
        raise RuntimeError("SENDFILE needs a socket transport")
    while transport.get_write_buffer_size() and not cycle.disconnected:  # the status line and headers go first
        await asyncio.sleep(0.001)
    if cycle.disconnected:
        log.info("client hung up during %s %s before the response body", cycle.scope["method"], cycle.scope["path"])
        return
    # A descriptor of our own: the transport closes its one when the client goes, and a number
    # reused by another connection or file must never receive these bytes.
    out_fd = os.dup(sock.fileno())
    progress = [0]
    try:
        await asyncio.get_running_loop().run_in_executor(None, _sendfile_all, out_fd, fd, offset, count, progress)
    except (ConnectionError, TimeoutError) as exc:
        log.info("client hung up during %s %s after %d of %d bytes of the response (%s)", cycle.scope["method"],
                 cycle.scope["path"], progress[0], count, exc.strerror or exc)
        _abandon(transport, cycle)
        return
    except OSError as exc:
        log.error("sending %s failed after %d of %d bytes: %s", cycle.scope["path"], progress[0], count,
                  exc.strerror or exc)
        _abandon(transport, cycle)
        return
    finally:
        os.close(out_fd)
    cycle.expected_content_length -= count  # uvicorn counts body bytes it sent itself


class ThreadBody:
    """The RAW_BODY extension's writer: `write` (from one thread that is not the event loop's) sends
    every byte to the client's socket, waiting for room, and raises ConnectionError when the client
    went or TimeoutError when it took nothing for STALL_SECONDS; `sent` counts what went out.
    `finish()`, on the loop, closes the descriptor and tells uvicorn about the bytes it did not send."""

    def __init__(self, fd: int, cycle: Any) -> None:
        self._fd = fd
        self._cycle = cycle
        self._poller = select.poll()
        self._poller.register(fd, select.POLLOUT)
        self.sent = 0

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                if not self._poller.poll(STALL_SECONDS * 1000):
                    raise TimeoutError("client stopped reading") from None
                continue
            view = view[n:]
            self.sent += n

    def finish(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._cycle.expected_content_length -= self.sent


async def _raw_body(protocol: HttpToolsProtocol, cycle: Any) -> ThreadBody | None:
    transport = protocol.transport
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    while transport.get_write_buffer_size() and not cycle.disconnected:  # the status line and headers go first
        await asyncio.sleep(0.001)
    if cycle.disconnected:
        return None
    return ThreadBody(os.dup(sock.fileno()), cycle)  # our own descriptor, as for SENDFILE


def _abandon(transport: asyncio.BaseTransport, cycle: Any) -> None:
    """The response cannot be finished: drop the connection, and let uvicorn ignore the rest."""
    cycle.disconnected = True
    cycle.keep_alive = False
    transport.close()


def _sendfile_all(out_fd: int, in_fd: int, offset: int, count: int, progress: list[int]) -> None:
    """All `count` bytes to the (non-blocking) socket, waiting for room in its buffer; `progress[0]`
    counts what went out."""
    poller = select.poll()
    poller.register(out_fd, select.POLLOUT)
    while count > 0:
        try:
            sent = os.sendfile(out_fd, in_fd, offset, count)
        except BlockingIOError:
            if not poller.poll(STALL_SECONDS * 1000):
                raise TimeoutError("client stopped reading") from None
            continue
        if sent == 0:
            raise OSError("the file ended before the announced length")
        offset += sent
        count -= sent
        progress[0] += sent
