"""HTTP/1.1 on one connection: the failures (`HttpError` kinds), the connection (a socket and its
buffered reader) and the `Response` read from it: status line, header fields, and the body framed
as RFC 9112 says (`Content-Length`, chunked, or up to the close), read as it arrives.

`http1` (the pools and requests) builds on it. Failures: `ConnectError` (no connection), `TlsError`
(the handshake), `ReadTimeout` (no data within the read timeout) and `ProtocolError` (the
connection broke, or the answer is not HTTP/1.x); `cause` is the underlying exception.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from typing import overload

MAX_LINE = 65536
#: Lines of an answer's head (fields, folded continuations, lines that are no field alike) and
#: their bytes: a server sending more is refused, as http.client refuses over 100 fields.
MAX_FIELDS = 200
MAX_HEAD_BYTES = 256 * 1024
#: Digits a Content-Length may have (beyond an exabyte is no length).
MAX_LENGTH_DIGITS = 18
#: 1xx answers skipped before the real one (a server sending them forever is broken).
MAX_INTERIM = 10
CHUNK = 1 << 20
_HEX = b"0123456789abcdefABCDEF"


class HttpError(Exception):
    """A request that got no complete HTTP answer; `cause` is what failed underneath, if anything."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class ConnectError(HttpError):
    """No connection: refused, no route, a name that does not resolve, the connect timeout."""


class TlsError(HttpError):
    """The TLS handshake failed: `reason` is OpenSSL's (`CERTIFICATE_VERIFY_FAILED`,
    `WRONG_VERSION_NUMBER` when the answer was plain HTTP), when it names one."""

    def __init__(self, message: str, cause: BaseException | None = None, reason: str | None = None) -> None:
        super().__init__(message, cause)
        self.reason = reason


class InvalidUrl(HttpError):
    """A URL that is not http:// or https:// (a redirect to somewhere this client cannot go)."""


class ReadTimeout(HttpError):
    """No data within the read timeout (while sending, or waiting for or reading the answer)."""


class ProtocolError(HttpError):
    """The connection broke, or what came back is not HTTP/1.x; `kind` names it (the exception's
    class, `RemoteDisconnected` for a connection closed before an answer, `IncompleteRead`...)."""

    def __init__(self, kind: str, cause: BaseException | None = None) -> None:
        super().__init__(f"connection broken ({kind})", cause)
        self.kind = kind


class Reader:
    """A socket's bytes, buffered only as far as a line needs: `readline` for the head, `read1` for
    a body (straight from the socket when nothing is buffered). It knows what it holds, so a
    connection with bytes nobody asked for is never reused (`Connection.clean`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def readline(self, limit: int) -> bytes:
        """Up to and with the next b"\n", at most `limit` bytes; what is left at the close."""
        while True:
            end = self.buffer.find(b"\n", 0, limit)
            if end >= 0 or len(self.buffer) >= limit:
                cut = end + 1 if end >= 0 else limit
                line, self.buffer = self.buffer[:cut], self.buffer[cut:]
                return line
            data = self.sock.recv(65536)
            if not data:
                line, self.buffer = self.buffer, b""
                return line
            self.buffer += data

    def read1(self, n: int) -> bytes:
        """Up to `n` bytes (at least one, waiting for it), b"" at the close."""
        if self.buffer:
            data, self.buffer = self.buffer[:n], self.buffer[n:]
            return data
        return self.sock.recv(n)


class Connection:
    """One socket (TLS or not) and the reader its responses are read through."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = Reader(sock)

    def clean(self) -> bool:
        """Whether nothing was received beyond the answers read (else the next answer read here
        could be those bytes: the connection is not reused)."""
        pending = getattr(self.sock, "pending", None)  # TLS: decrypted bytes not read yet
        return not self.reader.buffer and not (pending is not None and pending())

    def dropped(self) -> bool:
        """For an idle connection: whether the server closed it (or sent something unasked)."""
        if not self.clean():
            return True
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        try:
            return bool(poller.poll(0))
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


class Headers:
    """A response's header fields: `get` and `[]` ignore case and join a repeated field's values
    with ", " (as urllib3 did: several `WWW-Authenticate` fields read as one list)."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self.fields = fields
        self._joined: dict[str, str] = {}
        for name, value in fields:
            key = name.lower()
            self._joined[key] = f"{self._joined[key]}, {value}" if key in self._joined else value

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._joined.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._joined[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._joined


def _line(reader: Reader) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise ProtocolError("LineTooLong")
    return line


def _number(text: str, digits: int) -> int | None:
    """`text` as a decimal number of at most `digits` ASCII digits, or None."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= digits else None


class Response:
    """An answer whose head has been read; the body is read with `read`/`read1` (or was, with
    `preload`, into `data`). Once the body is read to its end, the connection goes back to its
    pool (`release`) unless either side asked to close it; `release_conn` before that closes it."""

    def __init__(self, conn: Connection, method: str, release: Callable[[Connection], None],
                 reusable: bool = True) -> None:
        """Read the head of the answer to a `method` request from `conn`; `reusable` False: the
        connection is closed after it (the request was not sent whole)."""
        self._conn: Connection | None = conn
        self._release = release
        self._data: bytes | None = None
        try:
            for _ in range(MAX_INTERIM + 1):  # 1xx answers (100 Continue) come before the real one: skip them
                self.status, version = self._status_line(conn)
                self.headers = self._fields(conn)
                if not 100 <= self.status < 200:
                    break
            else:
                raise ProtocolError("TooManyInterimAnswers")
        except TimeoutError as exc:
            raise ReadTimeout("no answer in time", exc) from None
        except OSError as exc:
            raise ProtocolError(type(exc).__name__, exc) from None
        tokens = {t.strip().lower() for t in (self.headers.get("Connection") or "").split(",")}
        self._keep = reusable and ("keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens)
        coding = (self.headers.get("Transfer-Encoding") or "").lower()
        self._chunked, self._left = False, 0  # _left: bytes left of the body (of the chunk when chunked)
        self._crlf = False  # chunked: the CRLF after a chunk's data is still to be read
        if method == "HEAD" or self.status in (204, 304):
            self._done = True
        elif coding:
            self._done = False
            self._chunked = coding.rsplit(",", 1)[-1].strip() == "chunked"
            if not self._chunked:
                self._left, self._keep = -1, False  # another coding last: the body ends at the close
        else:
            self._left = self._length(self.headers.get("Content-Length"))
            self._done = self._left == 0
            if self._left < 0:
                self._keep = False
        if self._done:
            self._finish()

    @staticmethod
    def _status_line(conn: Connection) -> tuple[int, str]:
        line = _line(conn.reader)
        if not line:
            raise ProtocolError("RemoteDisconnected")
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        status = _number(parts[1], 3) if len(parts) >= 2 and len(parts[1]) == 3 else None
        if status is None or not parts[0].startswith("HTTP/1."):
            raise ProtocolError("BadStatusLine")
        return status, parts[0]  # HTTP/1.x past 1.1 is read as 1.1

    @staticmethod
    def _fields(conn: Connection) -> Headers:
        fields: list[tuple[str, str]] = []
        size = 0
        for _ in range(MAX_FIELDS + 1):  # every line counts, whatever it turns out to be
            raw = _line(conn.reader)
            size += len(raw)
            line = raw.decode("latin-1")
            if line in ("\r\n", "\n"):
                return Headers(fields)
            if not line:
                raise ProtocolError("RemoteDisconnected")
            if size > MAX_HEAD_BYTES:
                break
            if line[0] in " \t" and fields:  # an obsolete folded continuation line
                fields[-1] = (fields[-1][0], f"{fields[-1][1]} {line.strip()}")
                continue
            name, colon, value = line.partition(":")
            if colon and name.strip():  # a line that is no field is passed over, as http.client does
                fields.append((name.strip(), value.strip()))
        raise ProtocolError("TooManyHeaders")

    @staticmethod
    def _length(header: str | None) -> int:
        """The body's length from Content-Length (-1: none, the body ends at the close)."""
        if header is None:
            return -1
        values = {v.strip() for v in header.split(",")}
        length = _number(values.pop(), MAX_LENGTH_DIGITS) if len(values) == 1 else None
        if length is None:
            raise ProtocolError("InvalidContentLength")
        return length

    # -- the body --------------------------------------------------------------------------------
    def read1(self, n: int = CHUNK) -> bytes:
        """Up to `n` bytes of what has arrived (at least one, waiting for it), b"" at the end."""
        if self._done or n <= 0 or self._conn is None:
            return b""
        try:
            data = self._read1(self._conn.reader, n)
        except TimeoutError as exc:
            self.release_conn()
            raise ReadTimeout("no data in time", exc) from None
        except OSError as exc:
            self.release_conn()
            raise ProtocolError(type(exc).__name__, exc) from None
        except BaseException:
            self.release_conn()
            raise
        if not data:
            if self._left < 0:  # the body ended with the connection
                self._finish()
            elif not self._done:
                self.release_conn()
                raise ProtocolError("IncompleteRead")
            return b""
        if self._left > 0:
            self._left -= len(data)
            if not self._left:
                if self._chunked:
                    self._crlf = True
                else:
                    self._finish()
        return data

    def _read1(self, reader: Reader, n: int) -> bytes:
        if self._chunked and not self._left and not self._next_chunk(reader):
            return b""
        want = n if self._left < 0 else min(n, self._left)
        return reader.read1(want)

    def _next_chunk(self, reader: Reader) -> bool:
        """Read up to the next chunk's data; False (the body done) after the last chunk."""
        if self._crlf and _line(reader) not in (b"\r\n", b"\n"):
            raise ProtocolError("BadChunk")
        self._crlf = False
        line = _line(reader)
        if not line:
            raise ProtocolError("IncompleteRead")
        size = line.split(b";", 1)[0].strip()
        if not size or size.lstrip(_HEX):
            raise ProtocolError("BadChunk")
        self._left = int(size, 16)
        if self._left:
            return True
        for _ in range(MAX_FIELDS + 1):  # the trailer fields, ignored
            if _line(reader) in (b"\r\n", b"\n", b""):
                self._finish()
                return False
        raise ProtocolError("TooManyHeaders")

    def read(self, n: int = -1) -> bytes:
        """`n` bytes, fewer only at the end of the body (-1: all of it)."""
        parts: list[bytes] = []
        got = 0
        while n < 0 or got < n:
            data = self.read1(CHUNK if n < 0 else min(n - got, CHUNK))
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def preload(self) -> None:
        self._data = self.read()

    @property
    def data(self) -> bytes:
        """The whole body (read now unless it was preloaded)."""
        if self._data is None:
            self._data = self.read()
        return self._data

    def _finish(self) -> None:
        self._done = True
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._keep and conn.clean():  # bytes beyond the body (a HEAD's, a 204's): not reused
                self._release(conn)
            else:
                conn.close()

    def release_conn(self) -> None:
        """Done with this response: a connection whose body was not read to its end is closed."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._done = True
            conn.close()
