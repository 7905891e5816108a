"""Small scripted HTTP(S) servers on loopback for the puller tests, where a real registry cannot
show the behaviour: one port that speaks TLS and plain HTTP (to catch a downgrade redirect to the
same host and port), a web server that is not a registry, a registry whose token realm is on the
same HTTPS host. Each records what it received."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    tls: bool
    method: str
    path: str
    headers: dict[str, str]


#: (request, handler) -> (status, headers, body)
Script = Callable[[Seen, BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]


class ScriptedServer:
    """A threaded HTTP/1.0 server on 127.0.0.1 answering every request with `script`. With `tls`
    (cert, key) a connection whose first byte is a TLS handshake is served over TLS and any other
    over plain HTTP, both on the same port."""

    def __init__(self, script: Script, tls: tuple[str, str] | None = None) -> None:
        self.seen: list[Seen] = []
        context = None
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                seen = Seen(isinstance(self.connection, ssl.SSLSocket), self.command, self.path, dict(self.headers))
                outer.seen.append(seen)
                status, headers, body = script(seen, self)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_HEAD = do_POST = do_PUT = do_PATCH = do_GET

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
                if context is not None:
                    try:
                        if request.recv(1, socket.MSG_PEEK) == b"\x16":
                            request = context.wrap_socket(request, server_side=True)
                    except (OSError, ssl.SSLError):
                        return
                try:
                    Handler(request, client_address, self)
                finally:
                    if isinstance(request, ssl.SSLSocket):
                        request.close()

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.hostport = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
