"""distclient's own HTTP/1.1 (`http1`, `wire`) against a scripted server on loopback: body framing
(length, chunked, up to the close), interim answers, repeated fields, keep-alive reuse and what a
server that closed an idle connection, cut a body short or answered garbage leads to."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import BinaryIO

import pytest

from distclient.http1 import MAX_HOSTS, Pool
from distclient.wire import InvalidUrl, ProtocolError, ReadTimeout


class Scripted:
    """Answers each request with the next scripted reply: (raw bytes, close the connection after
    it). Records each request's connection number, head and body."""

    def __init__(self, replies: list[tuple[bytes, bool]]) -> None:
        self.replies = replies
        self.requests: list[tuple[int, bytes, bytes]] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.closed = threading.Semaphore(0)  # released as each connection ends
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn, self.connections), daemon=True).start()

    def _one(self, conn: socket.socket, number: int) -> None:
        reader = conn.makefile("rb")
        with conn, reader:
            self._answer(conn, reader, number)
        self.closed.release()

    def _answer(self, conn: socket.socket, reader: BinaryIO, number: int) -> None:
        while self.replies:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = reader.readline()
                if not line:
                    return
                head += line
            length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n")
                           if h.lower().startswith(b"content-length:")), 0)
            self.requests.append((number, head, reader.read(length)))
            reply, close = self.replies.pop(0)
            conn.sendall(reply)
            if close:
                return

    def url(self, path: str = "/x") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def pool() -> Iterator[Pool]:
    pool = Pool(connect_timeout=5, read_timeout=2, maxsize=2)
    yield pool
    pool.clear()


def test_framing_interim_answers_and_fields(pool: Pool) -> None:
    server = Scripted([
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n10\r\n" + b"d" * 16
         + b"\r\n0\r\nTrailer: t\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", False),  # a HEAD: no body whatever the length
        (b"HTTP/1.1 204 No Content\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the close", True),
    ])
    first = pool.request("GET", server.url("/a b?q=ü"), {"Accept": "x"})
    assert (first.status, first.data, first.headers["x-a"], first.headers.get("X-a")) == (200, b"hello", "1, 2", "1, 2")
    chunked = pool.request("GET", server.url(), {}, preload=False)
    assert [chunked.read1(4) for _ in range(7)] == [b"abc", b"dddd", b"dddd", b"dddd", b"dddd", b"", b""]
    assert pool.request("HEAD", server.url(), {}).data == b""
    assert pool.request("PUT", server.url(), {}, b"body").status == 204
    assert pool.request("GET", server.url(), {}).data == b"until the close"
    assert server.connections == 1  # all but the last kept the connection alive
    _, head, _ = server.requests[0]
    assert head.startswith(b"GET /a%20b?q=%C3%BC HTTP/1.1\r\n") and b"\r\nAccept-Encoding: identity\r\n" in head
    assert b"\r\nHost: 127.0.0.1:" in head and b"\r\nAccept: x\r\n" in head
    assert server.requests[3][2] == b"body" and b"\r\nContent-Length: 4\r\n" in server.requests[3][1]


def test_an_idle_connection_the_server_closed_is_not_reused(pool: Pool) -> None:
    server = Scripted([(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
                       (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False)])
    assert pool.request("GET", server.url(), {}).data == b"ok"  # kept (no Connection: close), then closed
    assert server.closed.acquire(timeout=10)
    assert pool.request("GET", server.url(), {}).data == b"ok"
    assert server.connections == 2


@pytest.mark.parametrize(("reply", "kind"), [
    (b"", "RemoteDisconnected"),
    (b"garbage\r\n\r\n", "BadStatusLine"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "IncompleteRead"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "BadChunk"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx", "InvalidContentLength"),
    # numbers that are not ASCII digits, or too long to be a length
    (b"HTTP/1.1 200 OK\r\nContent-Length: \xc2\xb2\r\n\r\nx", "InvalidContentLength"),  # a superscript two
    (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", "InvalidContentLength"),
    (b"HTTP/1.1 \xc2\xb2\xc2\xb2\xc2\xb2 OK\r\n\r\n", "BadStatusLine"),
    # an endless head: continuation lines that would grow one value for ever, lines that are no
    # field (passed over but counted), few lines of too many bytes
    (b"HTTP/1.1 200 OK\r\nX-A: 1\r\n" + b" folded\r\n" * 300 + b"\r\n", "TooManyHeaders"),
    (b"HTTP/1.1 200 OK\r\n" + b"no field here\r\n" * 300 + b"\r\n", "TooManyHeaders"),
    (b"HTTP/1.1 200 OK\r\n" + (b"X-Long: " + b"v" * 60000 + b"\r\n") * 5 + b"\r\n", "TooManyHeaders"),
])
def test_broken_answers_are_protocol_errors(pool: Pool, reply: bytes, kind: str) -> None:
    server = Scripted([(reply, True)])
    with pytest.raises(ProtocolError) as caught:
        pool.request("GET", server.url(), {})
    assert caught.value.kind == kind


def test_a_stalled_answer_is_a_read_timeout() -> None:
    pool = Pool(connect_timeout=5, read_timeout=0.3, maxsize=1)
    server = Scripted([(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", False), (b"", True)])  # then waits
    response = pool.request("GET", server.url(), {}, preload=False)
    assert response.read1(10) == b"abc"
    with pytest.raises(ReadTimeout):
        response.read1(10)
    with pytest.raises(ValueError, match="invalid header"):
        pool.request("GET", server.url(), {"X": "a\r\nInjected: 1"})


def test_an_answer_sent_before_the_upload_was_read_is_read(pool: Pool) -> None:
    """A server may refuse an upload (401, 413) without reading it and close: what it said is the
    answer, not a broken connection (as urllib3 reads it)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def refuse() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as reader:
            while reader.readline() not in (b"\r\n", b""):
                pass
            conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!")
    threading.Thread(target=refuse, daemon=True).start()
    response = pool.request("PUT", f"http://127.0.0.1:{listener.getsockname()[1]}/up", {}, b"x" * (32 << 20))
    assert (response.status, response.data) == (413, b"big!")
    listener.close()


def test_a_host_name_idna_cannot_encode_is_an_invalid_url(pool: Pool) -> None:
    with pytest.raises(InvalidUrl):
        pool.request("GET", "http://\u00fc..x/v2/", {})


def test_bytes_beyond_an_answer_never_become_the_next_answer(pool: Pool) -> None:
    """A server that sends more than it announced (a body after a HEAD or a 204, more than its
    Content-Length): the connection is not reused, so those bytes are never read as an answer."""
    stale = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"
    fresh = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"
    server = Scripted([(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + stale, False), (fresh, False),
                       (b"HTTP/1.1 204 No Content\r\n\r\n" + stale, False), (fresh, False)])
    assert pool.request("GET", server.url(), {}).data == b"ok"
    assert pool.request("GET", server.url(), {}).data == b"fresh"
    assert pool.request("GET", server.url(), {}).status == 204
    assert pool.request("GET", server.url(), {}).data == b"fresh"
    assert server.connections == 3  # the second answer's connection served the 204 too, then went


def test_idle_connections_are_kept_for_a_bounded_number_of_hosts(pool: Pool) -> None:
    ok = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False)
    first, *others = [Scripted([ok, ok]) for _ in range(MAX_HOSTS + 1)]  # each would answer twice
    assert pool.request("GET", first.url(), {}).data == b"ok"
    assert not first.closed.acquire(timeout=0.2)  # kept alive, idle in the pool
    for server in others:
        assert pool.request("GET", server.url(), {}).data == b"ok"
    assert first.closed.acquire(timeout=10)  # the host used longest ago lost its idle connection
