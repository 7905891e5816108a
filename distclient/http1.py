"""HTTP/1.1 for the registry client, on the standard library's sockets: keep-alive connection pools
(one per TLS setting) and requests; `wire` reads the answers.

Only what the client needs, and nothing it does itself: no redirects (it follows them, with its
credential rules), no retries (the transport's loop), no proxies (urllib3's PoolManager, used
before, had none either), no content decoding (requests say `Accept-Encoding: identity`: digests
are of the bytes as sent). `ssl` is imported for the first https:// connection only. Importing
this and `wire` costs ~2 ms where urllib3 cost 40-75 ms (it loads http.client, email, ssl, logging
and importlib.metadata): a good part of a small `puller pull`.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import quote, urlsplit

from .wire import ConnectError, Connection, InvalidUrl, ProtocolError, ReadTimeout, Response, TlsError

if TYPE_CHECKING:
    import ssl

USER_AGENT = "cargobay-distclient/1"
SEND_CHUNK = 1 << 20
#: Bodies up to this size go out in one write with the request head.
SMALL_BODY = 64 * 1024
#: Hosts whose idle connections a pool keeps (a registry redirecting to many storage hosts): the
#: one used longest ago loses its connections when another comes.
MAX_HOSTS = 32
#: Requests that carry a body, so that an empty one is announced as `Content-Length: 0`.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _target(path: str, query: str) -> str:
    """The request target: what cannot go on the wire (spaces, controls, non-ASCII) percent-encoded."""
    target = (path or "/") + (f"?{query}" if query else "")
    if target.isascii() and target.isprintable() and " " not in target:
        return target
    return "".join(c if "!" <= c <= "~" else quote(c, safe="") for c in target)


def _head(method: str, target: str, host: str, headers: dict[str, str], length: int | None) -> bytes:
    fields = {"Host": host, "User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    lower = {name.lower() for name in headers}
    fields = {k: v for k, v in fields.items() if k.lower() not in lower} | headers
    if length is not None and "content-length" not in lower:
        fields["Content-Length"] = str(length)
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in fields.items():
        if any(c in name for c in "\r\n:") or "\r" in value or "\n" in value:
            raise ValueError(f"invalid header {name!r}")  # as http.client: never split into two fields
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _body_length(method: str, body: bytes | BinaryIO | None) -> int | None:
    if body is None:
        return 0 if method in BODY_METHODS else None
    if isinstance(body, (bytes, bytearray, memoryview)):
        return len(body)
    here = body.tell()
    length = body.seek(0, 2) - here
    body.seek(here)
    return length


class Pool:
    """Keep-alive connections to any number of hosts with one TLS setting (`ca_file` alone, or the
    system's CAs; `verify` False: no certificate check at all), at most `maxsize` idle ones per
    host (more may be open at once). Thread-safe."""

    def __init__(self, connect_timeout: float, read_timeout: float, maxsize: int, ca_file: str | None = None,
                 verify: bool = True) -> None:
        self.connect_timeout, self.read_timeout, self.maxsize = connect_timeout, read_timeout, maxsize
        self.ca_file, self.verify = ca_file, verify
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._lock = threading.Lock()
        self._tls_context: ssl.SSLContext | None = None

    def request(self, method: str, url: str, headers: dict[str, str], body: bytes | BinaryIO | None = None,
                preload: bool = True) -> Response:
        """Send one request and read the answer's head (with `preload`, its whole body too, and
        the connection goes back to the pool); raises HttpError kinds, ValueError for a header
        value holding a line break (as http.client)."""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:  # a port that is no number
            parts, port = urlsplit(""), 0
        hostname = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not hostname:
            raise InvalidUrl(f"not an http:// or https:// URL: {url[:200]!r}")
        if not hostname.isascii():
            try:
                hostname = hostname.encode("idna").decode("ascii")
            except UnicodeError:
                raise InvalidUrl(f"not a host name: {hostname[:200]!r}") from None
        key = (parts.scheme, hostname, port)
        host = f"[{hostname}]" if ":" in hostname else hostname
        if port != (443 if parts.scheme == "https" else 80):
            host += f":{port}"
        length = _body_length(method, body)
        head = _head(method, _target(parts.path, parts.query), host, headers, length)
        conn = self._checkout(key)
        try:
            sent = self._send(conn, head, body)
            response = Response(conn, method, self._release(key), reusable=sent)
        except BaseException:
            conn.close()
            raise
        if preload:
            response.preload()
        return response

    def clear(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    # -- connections ---------------------------------------------------------------------------
    def _checkout(self, key: tuple[str, str, int]) -> Connection:
        with self._lock:
            idle = self._idle.get(key) or []
            while idle:
                conn = idle.pop()
                if not conn.dropped():
                    return conn
                conn.close()
        return self._connect(*key)

    def _release(self, key: tuple[str, str, int]) -> Callable[[Connection], None]:
        """What a response calls to give its connection back, its body read to the end."""
        def put(conn: Connection) -> None:
            evicted: list[Connection] = []
            with self._lock:
                idle = self._idle.pop(key, [])
                self._idle[key] = idle  # the most recently used host last
                while len(self._idle) > MAX_HOSTS:
                    evicted += self._idle.pop(next(iter(self._idle)))
                if len(idle) < self.maxsize:
                    idle.append(conn)
                else:
                    evicted.append(conn)
            for stale in evicted:
                stale.close()
        return put

    def _connect(self, scheme: str, host: str, port: int) -> Connection:
        try:
            sock = socket.create_connection((host, port), timeout=self.connect_timeout)
        except OSError as exc:  # refused, unreachable, gaierror, the connect timeout
            raise ConnectError(f"cannot connect to {host}:{port}: {exc}", exc) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request head and its body: no Nagle wait
            if scheme == "https":
                sock = self._handshake(sock, host)
            sock.settimeout(self.read_timeout)
            return Connection(sock)
        except BaseException:
            sock.close()
            raise

    def _handshake(self, sock: socket.socket, host: str) -> socket.socket:
        import ssl

        try:
            return self._context().wrap_socket(sock, server_hostname=host)  # with the connect timeout
        except ssl.SSLError as exc:  # a certificate that does not verify, or no TLS at all
            raise TlsError(str(exc), exc, exc.reason) from None
        except TimeoutError as exc:
            raise ConnectError(f"TLS handshake with {host} timed out", exc) from None
        except OSError as exc:  # a CA file that cannot be read; a reset during the handshake
            if exc.filename is not None or isinstance(exc, FileNotFoundError):
                raise TlsError(str(exc), exc) from None
            raise ProtocolError(type(exc).__name__, exc) from None

    def _context(self) -> ssl.SSLContext:
        import ssl

        with self._lock:
            if self._tls_context is None:
                context = ssl.create_default_context(cafile=self.ca_file)  # ca_file alone when given
                if not self.verify:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                context.set_alpn_protocols(["http/1.1"])
                self._tls_context = context
            return self._tls_context

    def _send(self, conn: Connection, head: bytes, body: bytes | BinaryIO | None) -> bool:
        """Send the request; False when the server closed the connection before all of it went
        out. Its answer may still be there to read (a 401 or 413 sent before reading an upload),
        as urllib3 reads it; when none is, reading it fails as a broken connection."""
        try:
            if body is None:
                conn.sock.sendall(head)
            elif isinstance(body, (bytes, bytearray, memoryview)):
                if len(body) <= SMALL_BODY:
                    conn.sock.sendall(head + body)
                else:
                    conn.sock.sendall(head)
                    conn.sock.sendall(body)
            else:
                conn.sock.sendall(head)
                while chunk := body.read(SEND_CHUNK):
                    conn.sock.sendall(chunk)
            return True
        except TimeoutError as exc:
            raise ReadTimeout("timed out sending the request", exc) from None
        except (BrokenPipeError, ConnectionResetError):
            return False
        except OSError as exc:
            raise ProtocolError(type(exc).__name__, exc) from None
