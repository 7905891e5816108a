"""Several `registry serve` replicas over one S3 bucket, for the end-to-end S3 tests; plus what those
tests need around S3: restarting a SeaweedFS in place (same ports, same data) and a recording
proxy in front of it that shows exactly which requests reached S3 with which headers.
"""

from __future__ import annotations

import http.client
import logging
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .s3servers import S3Server, _wait_ready
from .servers import RunningServer, start_cargobay

MiB = 1024 * 1024

_log = logging.getLogger(__name__)


def s3_config(server: S3Server, bucket: str, endpoint_url: str | None = None, **s3: Any) -> dict[str, Any]:
    """A Cargobay config (the dict start_cargobay writes as YAML) on S3. The secret key is not in
    it: it travels as CARGOBAY_STORAGE_S3_SECRET_KEY (see `s3_env`), as the docs recommend."""
    options = {
        "bucket": bucket,
        "endpoint_url": endpoint_url or server.endpoint_url,
        "region": server.region,
        "addressing_style": "path",
        "access_key": server.access_key,
        **s3,
    }
    return {"storage": {"driver": "s3", "s3": options, "delete": {"enabled": True}},
            "log": {"level": "info", "access": True}}


def s3_env(server: S3Server, **extra: str) -> dict[str, str]:
    return {"CARGOBAY_STORAGE_S3_SECRET_KEY": server.secret_key, **extra}


def start_replicas(workdir: Path, server: S3Server, bucket: str, count: int, config: dict[str, Any] | None = None,
                   env: dict[str, str] | None = None, **s3: Any) -> list[RunningServer]:
    """`count` replicas over `bucket`, started in parallel (each `registry serve` checks the bucket
    at start). `config` is merged over the S3 config (top-level sections replaced)."""
    full = {**s3_config(server, bucket, **s3), **(config or {})}
    full_env = s3_env(server, **(env or {}))
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(start_cargobay, workdir / f"replica-{chr(ord('a') + i)}", config=full, env=full_env)
                   for i in range(count)]
        replicas = []
        errors = []
        for future in futures:
            try:
                replicas.append(future.result())
            except Exception as exc:
                errors.append(exc)
    if errors:
        stop_all(replicas)
        raise errors[0]
    return replicas


def stop_all(servers: list[RunningServer]) -> None:
    for server in servers:
        server.stop()


def logs(servers: list[RunningServer], tail: int = 3000) -> str:
    return "\n".join(f"--- {s.hostport} ---\n{s.log()[-tail:]}" for s in servers)


# -- SeaweedFS in place ----------------------------------------------------------------------------
def stop_s3(server: S3Server) -> None:
    """Stop the S3 server process, keeping its data directory and ports for `restart_s3`."""
    server.stop()


def restart_s3(server: S3Server, timeout: float = 60.0) -> None:
    """Start the same server again: same command line (so the same ports and data), same log."""
    assert server.process.poll() is not None, "stop it first"
    args = server.process.args
    cwd = server.log_path.parent
    with open(server.log_path, "ab") as log:
        server.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
    server._client = None  # a fresh client: the old one's pooled connections are dead
    _wait_ready(server, timeout)
    _wait_serving(server, timeout)


def _wait_serving(server: S3Server, timeout: float) -> None:
    """Until an object round trip works: SeaweedFS answers listings (what `_wait_ready` asks) a
    moment before its volume server stores and serves objects again."""
    client = server.client()
    bucket = "cargobay-restart-probe"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", ())}:
                client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key="probe", Body=b"probe")
            if client.get_object(Bucket=bucket, Key="probe")["Body"].read() == b"probe":
                return
        except Exception as exc:  # not serving yet, whatever the reason: keep polling until the deadline
            _log.debug("%s not serving objects yet: %r", server.kind, exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.kind} did not serve objects within {timeout:.0f}s after a restart")
        time.sleep(0.2)


# -- a recording proxy in front of S3 --------------------------------------------------------------
@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    status: int

    @property
    def presigned(self) -> bool:
        """A request authenticated by a signature in the URL (what a 307 sends clients to)."""
        return "X-Amz-Signature" in self.query


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # or every small response waits for a delayed ACK (40 ms)
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = getattr(self, "_upstream", None)
        if upstream is None:
            upstream = self._upstream = http.client.HTTPConnection(*self.server.upstream, timeout=120)
        # Host stays as the client sent it: it is part of every SigV4 signature, presigned or not.
        headers = {name: value for name, value in self.headers.items() if name.lower() != "connection"}
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            upstream.close()
            self._upstream = None
            self.send_error(502)
            return
        self.server.record(Seen(self.command, urlsplit(self.path).path, parse_qs(urlsplit(self.path).query),
                                {k.lower(): v for k, v in self.headers.items()}, response.status))
        self.send_response_only(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        # A HEAD's Content-Length is the object's size (S3 clients read it as such); a body's is its length.
        length = response.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
        self.send_header("Content-Length", length)
        self._headers_buffer.append(b"\r\n")  # end_headers(), with the body in the same write
        if self.command != "HEAD":
            self._headers_buffer.append(data)
        self.flush_headers()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.seen: list[Seen] = []
        self._lock = threading.Lock()

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)


class RecordingProxy:
    """An HTTP proxy on a loopback port in front of an S3 endpoint that records every request's
    method, path, query and headers. Point the registry's `endpoint_url` at `url(host)`: presigned
    URLs then lead clients here too. Bodies are buffered (fine for test-sized objects)."""

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self._server = _ProxyServer((parts.hostname or "127.0.0.1", parts.port or 80))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}"

    @property
    def seen(self) -> list[Seen]:
        with self._server._lock:
            return list(self._server.seen)

    def clear(self) -> None:
        with self._server._lock:
            self._server.seen.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def wait_for(predicate: Any, timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; return its value or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
