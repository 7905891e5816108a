"""A webhook receiver on a loopback port for the notification tests: a threaded http.server that
records every POST (path, headers, body, what it answered), answers `status` (200, or 500 when
told to fail), and can be stopped and started again on the same port. Each request is answered on
a connection of its own (HTTP/1.0), so a stopped receiver takes nothing more.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int  # what the receiver answered

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300

    def events(self) -> list[dict[str, Any]]:
        return json.loads(self.body)["events"]

    def signed_by(self, secret: bytes) -> bool:
        """Whether `X-Cargobay-Signature` is the HMAC-SHA256 of the body under `secret`, as a
        receiver checks it (constant-time compare)."""
        expected = "sha256=" + hmac.new(secret, self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("x-cargobay-signature", ""), expected)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = self.server.owner.status
        self.server.owner.record(Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body, status))
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, owner: WebhookReceiver) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.owner = owner


class WebhookReceiver:
    def __init__(self) -> None:
        self.status = 200
        self.port = 0
        self._deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        """Listen (again: on the same port as before)."""
        assert self._server is None, "already listening"
        self._server = _Server(self.port, self)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        """Stop listening: deliveries fail with connection refused until `start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def record(self, delivery: Delivery) -> None:
        with self._lock:
            self._deliveries.append(delivery)

    def deliveries(self, path: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self._deliveries if path is None or d.path == path]

    def accepted_events(self, path: str | None = None) -> list[dict[str, Any]]:
        """Every event of every delivery answered 2xx, in the order they came."""
        return [event for d in self.deliveries(path) if d.accepted for event in d.events()]

