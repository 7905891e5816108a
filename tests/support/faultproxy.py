"""A small programmable HTTP proxy in front of a real registry, for the puller tests and the
pull-through cache's tests (a lying or recording upstream).

It records every request, and can: demand Bearer tokens it issues itself at `/token` (a test token
server), demand Basic credentials, redirect blob downloads to another proxy (another host, like an
S3 presigned URL), and inject faults (status codes, dropped connections, truncated, short, corrupt,
overlong, stalled or slow bodies) on matching requests.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class Fault:
    """`action` on requests whose path contains `path` (and method matches); `times` < 0 = always.

    actions: status (reply `status`, with `retry_after`), drop (close without answering), truncate
    (send `keep` body bytes of the full Content-Length, then close), short (send `keep` bytes with
    an honest Content-Length), corrupt (flip one byte), extra (append bytes), stall (send `keep`
    bytes then sleep `delay`), slow (sleep `delay` between 64 KiB chunks), body (reply 200 with
    `body` as a manifest).
    """

    action: str
    path: str = ""
    method: str | None = None
    times: int = 1
    status: int = 503
    retry_after: str | None = None
    keep: int = 0
    delay: float = 0.0
    body: bytes = b""

    def matches(self, method: str, path: str) -> bool:
        return self.times != 0 and self.path in path and (self.method is None or self.method == method)


@dataclass
class ProxyConfig:
    token_auth: bool = False
    #: user -> password; with token_auth these may get tokens for any repository
    users: dict[str, str] = field(default_factory=dict)
    #: repositories anonymous token requests may pull
    public: set[str] = field(default_factory=set)
    basic_auth: bool = False
    redirect_blobs_to: str | None = None


class Proxy:
    def __init__(self, upstream: str, config: ProxyConfig | None = None, host: str = "127.0.0.1",
                 tls: tuple[str, str] | None = None) -> None:
        self.upstream = urlsplit(upstream)
        self.config = config or ProxyConfig()
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.tokens: dict[str, set[str]] = {}
        self.token_requests: list[Recorded] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            do_HEAD = do_GET
            do_POST = do_GET
            do_PUT = do_GET

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.host = host
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.hostport}"

    def add_fault(self, **kwargs: object) -> Fault:
        fault = Fault(**kwargs)  # type: ignore[arg-type]
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.requests.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- internals ---------------------------------------------------------------------------
    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None

    def _reply(self, h: BaseHTTPRequestHandler, status: int, body: bytes = b"",
               headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _issue_token(self, h: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        user = None
        auth = h.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if self.config.users.get(name) != password:
                self._reply(h, 401, b'{"details":"bad credentials"}')
                return
            user = name
        granted = set()
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            repo = rest.rsplit(":", 1)[0]
            if kind == "repository" and (user or repo in self.config.public):
                granted.add(repo)
        token = secrets.token_hex(16)
        with self._lock:
            self.tokens[token] = granted
        self._reply(h, 200, json.dumps({"token": token, "expires_in": 300}).encode(),
                    {"Content-Type": "application/json"})

    def _authorized(self, h: BaseHTTPRequestHandler, path: str) -> bool:
        parts = path.split("/")
        repo = "/".join(parts[2:-2]) if len(parts) > 4 else ""
        auth = h.headers.get("Authorization", "")
        if self.config.token_auth:
            token = auth[7:] if auth.startswith("Bearer ") else None
            with self._lock:
                granted = self.tokens.get(token or "")
            if granted is not None and (not repo or repo in granted):
                return True
            scope = f',scope="repository:{repo}:pull"' if repo else ""
            challenge = f'Bearer realm="{self.url}/token",service="test-proxy"{scope}'
            self._reply(h, 401, b'{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}',
                        {"WWW-Authenticate": challenge, "Content-Type": "application/json"})
            return False
        if self.config.basic_auth:
            if auth.startswith("Basic "):
                name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                if self.config.users.get(name) == password:
                    return True
            self._reply(h, 401, b'{"errors":[{"code":"UNAUTHORIZED","message":"login"}]}',
                        {"WWW-Authenticate": 'Basic realm="test"'})
            return False
        return True

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        path, query = split.path, parse_qs(split.query)
        record = Recorded(h.command, path, query, dict(h.headers.items()))
        with self._lock:
            self.requests.append(record)
        if path == "/token":
            with self._lock:
                self.token_requests.append(record)
            self._issue_token(h, query)
            return
        if not self._authorized(h, path):
            return
        if self.config.redirect_blobs_to and "/blobs/sha256:" in path and h.command == "GET":
            self._reply(h, 307, b"", {"Location": f"{self.config.redirect_blobs_to}{h.path}"})
            return
        fault = self._take_fault(h.command, path)
        if fault and fault.action == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._reply(h, fault.status, b'{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}', headers)
            return
        if fault and fault.action == "drop":
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return
        if fault and fault.action == "body":
            self._reply(h, 200, fault.body, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
            return
        self._forward(h, fault)

    def _forward(self, h: BaseHTTPRequestHandler, fault: Fault | None) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "authorization", "connection")}
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            conn.request(h.command, h.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        out_headers = [(k, v) for k, v in resp.getheaders()
                       if k.lower() not in ("content-length", "connection", "transfer-encoding", "date")]
        # A HEAD's Content-Length is the size of what a GET would send (a manifest's or blob's size).
        declared = int(resp.getheader("Content-Length") or 0) if h.command == "HEAD" else len(data)
        if fault and fault.action == "corrupt" and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        elif fault and fault.action == "extra":
            data = data + b"\0" * 1024
            declared = len(data)
        elif fault and fault.action == "short":
            data = data[: fault.keep]
            declared = len(data)
        h.send_response(resp.status)
        for k, v in out_headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(declared))
        h.end_headers()
        if h.command == "HEAD":
            return
        if fault and fault.action in ("truncate", "stall"):
            h.wfile.write(data[: fault.keep])
            h.wfile.flush()
            if fault.action == "stall":
                time.sleep(fault.delay)
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault and fault.action == "slow":
            for i in range(0, len(data), 65536):
                h.wfile.write(data[i:i + 65536])
                h.wfile.flush()
                time.sleep(fault.delay)
            return
        h.wfile.write(data)
