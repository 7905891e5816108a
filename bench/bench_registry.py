#!/usr/bin/env python3
"""Cargobay vs CNCF Distribution (Debian's `docker-registry`) on loopback, disk storage.

    python bench/bench_registry.py [--quick] [--rounds N] [--workers 1,2] [--only ROWS]
                                   [--cargobay-src DIR] [--profile DIR] [--tmp DIR]

Starts Cargobay (`python -m registry serve`, once per --workers value) and Distribution side by
side, each on its own temp dir, and runs every row against each server in alternation (round r
runs the servers in rotated order), several rounds, and prints the median of each figure and the
ratio Cargobay/Distribution (higher is better; the target is >= 1.0x on every row). Also prints
Cargobay's peak RSS (whole process tree, sampled) during the upload rows against its idle RSS.

The client is built not to be the bottleneck on a small machine: uploads go out with sendfile(2)
from pre-generated files (never held in memory), downloads are read into one reused buffer by
blocking sockets in threads, and the request/s rows use `wrk` (falling back to a lean asyncio
keep-alive client when wrk is missing). Exit status: 0 when the bench ran (whatever the ratios),
1 with one `bench: FAILED: ...` line when a server misbehaved or something else went wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

MiB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support import servers as support_servers  # noqa: E402
from tests.support.servers import RunningServer  # noqa: E402

ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IO_TIMEOUT = 300.0
RECV_BUFFER = 4 * MiB
ROW_KEYS = ("mono", "chunked", "conc-up", "down", "conc-down", "head", "get", "put", "tags")
TAGS_LISTED = 1000  # tags in the repository the tags/list row pages through


class BenchError(Exception):
    """An expected failure: reported as one line, exit status 1."""


# -- HTTP/1.1 client over a raw socket -------------------------------------------------------------

@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    received: int = 0  # body bytes, also when they were discarded


class Connection:
    """One keep-alive HTTP/1.1 connection. Request bodies can be sent with sendfile(2) from a file,
    response bodies can be discarded into a reused buffer (optionally hashed)."""

    def __init__(self, host: str, port: int, timeout: float = IO_TIMEOUT) -> None:
        self.host_header = f"{host}:{port}"
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb", buffering=256 * 1024)

    def close(self) -> None:
        try:
            self.rfile.close()
        finally:
            self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"",
                file: object | None = None, offset: int = 0, length: int = 0,
                sink: memoryview | None = None, hasher: hashlib._Hash | None = None) -> Reply:
        """`body`, or `length` bytes of `file` from `offset` (sendfile) followed by `body`."""
        size = length + len(body) if file is not None else len(body)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        if size or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {size}")
        for key, value in (headers or {}).items():
            lines.append(f"{key}: {value}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if file is None:
            self.sock.sendall(head + body)
        else:
            self.sock.sendall(head)
            sent = self.sock.sendfile(file, offset, length) if length else 0  # type: ignore[arg-type]
            if sent != length:
                raise BenchError(f"sendfile sent {sent} of {length} bytes")
            if body:
                self.sock.sendall(body)
        return self._reply(method, sink, hasher)

    def _reply(self, method: str, sink: memoryview | None, hasher: hashlib._Hash | None) -> Reply:
        line = self.rfile.readline(65537)
        if not line:
            raise ConnectionError("server closed the connection without a response")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise BenchError(f"malformed status line {line[:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        while True:
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        reply = Reply(status, headers)
        if method == "HEAD" or status in (204, 304) or status < 200:
            return reply
        if "chunked" in headers.get("transfer-encoding", "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += self._read_exact(size)
                self.rfile.readline(8)
            reply.body, reply.received = bytes(data), len(data)
            return reply
        length = int(headers.get("content-length", "0"))
        if sink is not None and status < 300:
            reply.received = self._discard(length, sink, hasher)
        else:
            reply.body = self._read_exact(length)
            reply.received = length
        return reply

    def _read_exact(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) != n:
            raise ConnectionError(f"connection closed after {len(data)} of {n} body bytes")
        return data

    def _discard(self, n: int, sink: memoryview, hasher: hashlib._Hash | None) -> int:
        remaining = n
        while remaining:
            got = self.rfile.readinto(sink[:min(len(sink), remaining)])  # type: ignore[attr-defined]
            if not got:
                raise ConnectionError(f"connection closed after {n - remaining} of {n} body bytes")
            if hasher is not None:
                hasher.update(sink[:got])
            remaining -= got
        return n


def expect(reply: Reply, status: int, what: str) -> Reply:
    if reply.status != status:
        detail = reply.body[:300].decode("utf-8", "replace").strip()
        raise BenchError(f"{what}: expected HTTP {status}, got {reply.status} {detail}")
    return reply


def _target(location: str, **query: str) -> str:
    """Request target from a Location (absolute, as Distribution sends, or a path), plus query."""
    parts = urlsplit(location)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    for key, value in query.items():
        target += ("&" if "?" in target else "?") + f"{key}={value}"
    return target


# -- test data -------------------------------------------------------------------------------------

#: A fresh copy of a blob (`Blob.fresh`) differs from it in its last TAIL bytes.
TAIL = 4096


@dataclass
class Blob:
    """`size` bytes: the file's, except that a fresh copy sends `tail` instead of its last bytes."""

    path: Path
    size: int
    digest: str
    tail: bytes = b""
    #: sha256 of all but the file's last TAIL bytes, so that a fresh copy's digest costs one update.
    head_hash: hashlib._Hash | None = field(default=None, repr=False)

    def fresh(self) -> Blob:
        """The same size with a new digest: new content to the server, sent from the same file."""
        if self.head_hash is None:
            raise BenchError(f"{self.path.name} is too small for fresh copies")
        tail = os.urandom(TAIL)
        hasher = self.head_hash.copy()
        hasher.update(tail)
        return Blob(self.path, self.size, f"sha256:{hasher.hexdigest()}", tail, self.head_hash)

    def send(self, conn: Connection, method: str, target: str, headers: dict[str, str], file: object,
             offset: int = 0, length: int | None = None) -> Reply:
        """Send bytes [offset, offset + length) of this blob as the request body."""
        end = self.size if length is None else offset + length
        tail_at = self.size - len(self.tail)  # the file's bytes before it, the tail's from it
        from_file = max(0, min(end, tail_at) - offset)
        extra = self.tail[max(offset, tail_at) - tail_at:max(end, tail_at) - tail_at]
        return conn.request(method, target, headers, body=extra, file=file, offset=offset, length=from_file)


def make_blob(path: Path, size: int) -> Blob:
    hasher = hashlib.sha256()
    head_hash = None
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(8 * MiB, left))
            f.write(chunk)
            if size > TAIL and left - len(chunk) < TAIL <= left:  # the chunk holding the tail's start
                cut = len(chunk) - (TAIL - (left - len(chunk)))
                hasher.update(chunk[:cut])
                head_hash = hasher.copy()
                hasher.update(chunk[cut:])
            else:
                hasher.update(chunk)
            left -= len(chunk)
    return Blob(path, size, f"sha256:{hasher.hexdigest()}", head_hash=head_hash)


# -- servers ---------------------------------------------------------------------------------------
# Servers start and stop through the tests' own harness (tests/support/servers.py); a bench Server
# adds what the bench measures about one.

@dataclass
class Server:
    label: str
    kind: str  # "cargobay" | "distribution"
    running: RunningServer
    start_rss: int = 0
    idle_rss: int = 0
    peak_rss: dict[str, int] = field(default_factory=dict)  # "upload"/"download" rows -> sampled peak
    hwm_after_uploads: int = 0

    @property
    def host(self) -> str:
        return self.running.host

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.running.process

    @property
    def log_path(self) -> Path:
        return self.running.log_path

    def connect(self) -> Connection:
        return Connection(self.host, self.port)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.running.log().strip().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        self.running.stop()


def started(label: str, kind: str, start: Callable[[], RunningServer]) -> Server:
    """A bench Server around what `start` starts; a server that does not come up is a BenchError."""
    try:
        running = start()
    except RuntimeError as exc:
        raise BenchError(f"{label} did not start: {exc}") from None
    server = Server(label, kind, running)
    server.start_rss = rss_of(process_tree(running.process.pid))
    return server


@dataclass
class Variant:
    """A Cargobay to run: a source tree, an interpreter and extra environment (`--variant`)."""
    name: str
    src: Path
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, default_src: Path) -> Variant:
        """`NAME[;src=DIR][;python=EXE][;VAR=VALUE...]`"""
        name, *items = [part.strip() for part in text.split(";")]
        variant = cls(name, default_src)
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not name:
                raise BenchError(f"--variant {text!r}: expected NAME;src=DIR;python=EXE;VAR=VALUE")
            if key == "src":
                variant.src = Path(value)
            elif key == "python":
                variant.python = value
            else:
                variant.env[key] = value
        return variant


def start_cargobay(variant: Variant, workdir: Path, workers: int) -> Server:
    slug = f"{re.sub(r'[^A-Za-z0-9]+', '-', variant.name)}-w{workers}"
    return started(f"{variant.name} w{workers}", "cargobay", lambda: support_servers.start_cargobay(
        workdir / slug, extra_args=["--workers", str(workers)], python=variant.python, src=variant.src,
        env=variant.env, inherit_settings=False, ready_timeout=60))


def start_distribution(binary: str, workdir: Path) -> Server:
    return started("Distribution", "distribution", lambda: support_servers.start_distribution(
        workdir / "distribution", binary=binary, ready_timeout=60))


# -- memory of a process tree ----------------------------------------------------------------------

PAGE = os.sysconf("SC_PAGE_SIZE")


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_of(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (all their threads)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


def hwm_of(pids: list[int]) -> int:
    """Sum of VmHWM (each process's peak resident set since it started)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
    return total


class RssSampler:
    """Samples the summed VmRSS of a server's process tree every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        pids, refreshed = process_tree(self.pid), time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - refreshed > 0.5:
                pids, refreshed = process_tree(self.pid), time.monotonic()
            self.peak = max(self.peak, rss_of(pids))
            self._stop.wait(self.interval)


# -- operations (each returns bytes moved; timing is done by the caller) ---------------------------

_sinks = threading.local()


def _sink() -> memoryview:
    if not hasattr(_sinks, "buf"):
        _sinks.buf = memoryview(bytearray(RECV_BUFFER))
    return _sinks.buf


def upload_monolithic(server: Server, repo: str, blob: Blob) -> int:
    """POST, then PUT ?digest= with the whole body."""
    with server.connect() as conn, open(blob.path, "rb") as f:
        start = expect(conn.request("POST", f"/v2/{repo}/blobs/uploads/"), 202, "POST upload")
        put = blob.send(conn, "PUT", _target(start.headers["location"], digest=blob.digest),
                        {"Content-Type": "application/octet-stream"}, f)
        _check_created(put, blob, "PUT upload with body")
    return blob.size


def upload_chunked(server: Server, repo: str, blob: Blob, chunk: int) -> int:
    """POST, PATCH `chunk`-sized pieces with Content-Range, then PUT ?digest= without a body."""
    with server.connect() as conn, open(blob.path, "rb") as f:
        location = expect(conn.request("POST", f"/v2/{repo}/blobs/uploads/"), 202, "POST upload").headers["location"]
        for offset in range(0, blob.size, chunk):
            n = min(chunk, blob.size - offset)
            reply = blob.send(conn, "PATCH", _target(location), {
                "Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{offset + n - 1}"},
                f, offset, n)
            location = expect(reply, 202, f"PATCH chunk at {offset}").headers["location"]
        _check_created(conn.request("PUT", _target(location, digest=blob.digest)), blob, "PUT upload")
    return blob.size


def upload_streamed(server: Server, repo: str, blob: Blob) -> int:
    """What docker and containers/image do: POST, one PATCH with the whole body, PUT ?digest=."""
    with server.connect() as conn, open(blob.path, "rb") as f:
        location = expect(conn.request("POST", f"/v2/{repo}/blobs/uploads/"), 202, "POST upload").headers["location"]
        reply = blob.send(conn, "PATCH", _target(location), {"Content-Type": "application/octet-stream"}, f)
        location = expect(reply, 202, "PATCH whole body").headers["location"]
        _check_created(conn.request("PUT", _target(location, digest=blob.digest)), blob, "PUT upload")
    return blob.size


def _check_created(reply: Reply, blob: Blob, what: str) -> None:
    expect(reply, 201, what)
    if reply.headers.get("docker-content-digest") != blob.digest:
        raise BenchError(f"{what}: Docker-Content-Digest {reply.headers.get('docker-content-digest')!r}, "
                         f"expected {blob.digest}")


def download(server: Server, repo: str, blob: Blob, verify: bool = False) -> int:
    hasher = hashlib.sha256() if verify else None
    with server.connect() as conn:
        reply = expect(conn.request("GET", f"/v2/{repo}/blobs/{blob.digest}", sink=_sink(), hasher=hasher),
                       200, "GET blob")
    if reply.received != blob.size:
        raise BenchError(f"GET blob: received {reply.received} bytes, expected {blob.size}")
    if hasher is not None and f"sha256:{hasher.hexdigest()}" != blob.digest:
        raise BenchError(f"GET blob: the bytes served do not match {blob.digest}")
    return blob.size


def concurrently(jobs: Sequence[Callable[[], int]]) -> tuple[int, float]:
    """Run the jobs in as many threads, released together; (bytes, wall seconds)."""
    barrier = threading.Barrier(len(jobs) + 1)

    def wrapped(job: Callable[[], int]) -> int:
        barrier.wait()
        return job()

    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(wrapped, job) for job in jobs]
        barrier.wait()
        t0 = time.perf_counter()
        total = sum(f.result() for f in futures)
        return total, time.perf_counter() - t0


def manifest_bytes(config: Blob, layer: Blob, title: str = "cargobay bench") -> bytes:
    """An image manifest of `config` and `layer`; `title` makes manifests of the same blobs differ."""
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest,
                   "size": config.size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.digest,
                    "size": layer.size}],
        "annotations": {"org.opencontainers.image.title": title},
    }, indent=3).encode()


def push_manifest(server: Server, repo: str, tag: str, config: Blob, layer: Blob) -> str:
    manifest = manifest_bytes(config, layer)
    with server.connect() as conn:
        reply = conn.request("PUT", f"/v2/{repo}/manifests/{tag}", {"Content-Type": OCI_MANIFEST}, body=manifest)
        expect(reply, 201, "PUT manifest")
        for method in ("HEAD", "GET"):
            got = expect(conn.request(method, f"/v2/{repo}/manifests/{tag}", {"Accept": ACCEPT}), 200,
                         f"{method} manifest")
            if method == "GET" and got.body != manifest:
                raise BenchError("GET manifest: the bytes served differ from the bytes pushed")
    return f"sha256:{hashlib.sha256(manifest).hexdigest()}"


def put_manifests(server: Server, repo: str, prefix: str, config: Blob, layer: Blob, *,
                  seconds: float = 0.0, count: int = 0) -> float:
    """PUT a new manifest under a new tag, one after another on one connection (the last step of
    a CI push), for `seconds` or `count` manifests; manifests per second."""
    t0 = time.perf_counter()
    done = 0
    with server.connect() as conn:
        while (count and done < count) or (seconds and time.perf_counter() - t0 < seconds):
            tag = f"{prefix}{done}"
            body = manifest_bytes(config, layer, tag)
            expect(conn.request("PUT", f"/v2/{repo}/manifests/{tag}", {"Content-Type": OCI_MANIFEST}, body=body),
                   201, f"PUT manifest {tag}")
            done += 1
    return done / (time.perf_counter() - t0)


# -- requests per second ---------------------------------------------------------------------------

def wrk_rate(wrk: str, url: str, method: str, seconds: float, connections: int, workdir: Path) -> float:
    script = workdir / f"wrk-{method.lower()}.lua"
    script.write_text(f'wrk.method = "{method}"\n')
    cmd = [wrk, "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "10s",
           "-H", f"Accept: {ACCEPT}", "-s", str(script), url]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk {method} {url} did not finish") from None
    text = out.stdout + out.stderr
    match = re.search(r"Requests/sec:\s*([\d.]+)", text)
    if out.returncode != 0 or not match:
        raise BenchError(f"wrk {method} {url} failed: {text.strip()[-300:]}")
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    if bad:
        raise BenchError(f"{method} {url}: {bad.group(1)} non-2xx responses under load")
    errors = re.search(r"Socket errors:.*", text)
    if errors and re.search(r"(connect|read|write|timeout) [1-9]", errors.group(0)):
        raise BenchError(f"{method} {url}: {errors.group(0).strip()}")
    return float(match.group(1))


class _Pinger(asyncio.Protocol):
    """One keep-alive connection with one request in flight; counts complete responses."""

    def __init__(self, request: bytes, has_body: bool, deadline: float, done: asyncio.Future) -> None:
        self.request, self.has_body, self.deadline, self.done = request, has_body, deadline, done
        self.buffer = b""
        self.count = 0
        self.error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            total = end + 4
            if self.has_body:
                match = _CONTENT_LENGTH.search(buf, 0, end + 2)
                total += int(match.group(1)) if match else 0
            if len(buf) < total:
                break
            if not buf.startswith(b"HTTP/1.1 200"):
                self.error = buf[:buf.find(b"\r\n")].decode("latin-1")
                self.transport.close()  # type: ignore[attr-defined]
                return
            buf = buf[total:]
            self.count += 1
            if time.perf_counter() >= self.deadline:
                self.transport.close()  # type: ignore[attr-defined]
                return
            self.transport.write(self.request)  # type: ignore[attr-defined]
        self.buffer = buf

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


_CONTENT_LENGTH = re.compile(rb"\r\n[Cc]ontent-[Ll]ength:[ \t]*(\d+)")


def asyncio_rate(host: str, port: int, path: str, method: str, seconds: float, connections: int) -> float:
    """A lean keep-alive load generator (uvloop when available, asyncio protocols, no HTTP library):
    used for HEAD, which wrk cannot do (it waits for a body after HEAD), and for GET without wrk."""
    request = (f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: {ACCEPT}\r\n\r\n").encode()

    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        deadline = t0 + seconds
        pingers, waits = [], []
        for _ in range(connections):
            done = loop.create_future()
            _transport, pinger = await loop.create_connection(
                functools.partial(_Pinger, request, method != "HEAD", deadline, done), host, port)
            pingers.append(pinger)
            waits.append(done)
        await asyncio.wait_for(asyncio.gather(*waits), seconds + 30)
        elapsed = time.perf_counter() - t0
        errors = [p.error for p in pingers if p.error]
        if errors:
            raise BenchError(f"{method} {path}: {errors[0]} under load")
        return sum(p.count for p in pingers) / elapsed

    try:
        import uvloop
        runner = uvloop.run if hasattr(uvloop, "run") else None
    except ImportError:
        runner = None
    try:
        return runner(main()) if runner else asyncio.run(main())
    except TimeoutError:
        raise BenchError(f"{method} {path}: responses stopped coming") from None


# -- the bench -------------------------------------------------------------------------------------

@dataclass
class Row:
    key: str
    title: str
    unit: str
    run: Callable[[Server, int], float]  # (server, round) -> figure
    phase: str = ""  # "upload"/"download": sample the server's RSS while the row runs
    samples: dict[str, list[float]] = field(default_factory=dict)
    costs: dict[str, list[float]] = field(default_factory=dict)  # server CPU per MiB or per request


def build_rows(args: argparse.Namespace, big: Blob, smalls: list[Blob], config: Blob, workdir: Path,
               wrk: str | None) -> list[Row]:
    counter = iter(range(10**9))

    def fresh(prefix: str) -> str:
        return f"bench/{prefix}-{next(counter)}"

    def rate(nbytes: int, seconds: float) -> float:
        return nbytes / MiB / seconds

    def timed(fn: Callable[[], int]) -> float:
        t0 = time.perf_counter()
        n = fn()
        return rate(n, time.perf_counter() - t0)

    def content(blob: Blob) -> Blob:
        """What an upload row sends: new to the server (a push of a new layer: the whole path, its
        durable write included), or with --same-content the blob it has (a push again)."""
        return blob if args.same_content else blob.fresh()

    def conc_uploads(server: Server, _r: int) -> float:
        return rate(*concurrently([functools.partial(upload_streamed, server, fresh("conc"), content(b))
                                   for b in smalls]))

    def conc_downloads(server: Server, _r: int) -> float:
        jobs = [functools.partial(download, server, "bench/data", b) for b in smalls + smalls]
        return rate(*concurrently(jobs[:args.concurrent_downloads]))

    def tags_list(server: Server, _r: int) -> float:
        path = "/v2/bench/tags/tags/list?n=100"
        if wrk:
            return wrk_rate(wrk, server.url(path), "GET", args.seconds, 32, workdir)
        return asyncio_rate(server.host, server.port, path, "GET", args.seconds, 32)

    def manifests(method: str) -> Callable[[Server, int], float]:
        def go(server: Server, _r: int) -> float:
            path = "/v2/bench/data/manifests/latest"
            if wrk and method != "HEAD":
                return wrk_rate(wrk, server.url(path), method, args.seconds, 32, workdir)
            return asyncio_rate(server.host, server.port, path, method, args.seconds, 32)
        return go

    n_small, small_mib, big_mib, chunk_mib = len(smalls), smalls[0].size // MiB, big.size // MiB, args.chunk // MiB
    return [
        Row("mono", f"upload {big_mib} MiB monolithic (POST, PUT ?digest= + body)", "MiB/s",
            lambda s, r: timed(functools.partial(upload_monolithic, s, fresh("mono"), content(big))), phase="upload"),
        Row("chunked", f"upload {big_mib} MiB chunked ({chunk_mib} MiB PATCHes + Content-Range)", "MiB/s",
            lambda s, r: timed(functools.partial(upload_chunked, s, fresh("chunked"), content(big), args.chunk)),
            phase="upload"),
        Row("conc-up", f"{n_small} concurrent uploads x {small_mib} MiB (POST, PATCH, PUT)", "MiB/s",
            conc_uploads, phase="upload"),
        Row("down", f"download {big_mib} MiB", "MiB/s",
            lambda s, r: timed(lambda: download(s, "bench/data", big)), phase="download"),
        Row("conc-down", f"{args.concurrent_downloads} concurrent downloads x {small_mib} MiB", "MiB/s", conc_downloads,
            phase="download"),
        Row("head", "manifest HEAD by tag, 32 connections", "req/s", manifests("HEAD")),
        Row("get", "manifest GET by tag, 32 connections", "req/s", manifests("GET")),
        Row("put", "manifest PUT by tag (new manifest, new tag), one connection", "req/s",
            lambda s, r: put_manifests(s, "bench/data", f"put-r{r}-", config, smalls[0], seconds=args.seconds)),
        Row("tags", f"tags/list?n=100 of {TAGS_LISTED:,} tags, 32 connections", "req/s", tags_list),
    ]


def prepare(server: Server, big: Blob, smalls: list[Blob], config: Blob) -> None:
    """Untimed: the blobs the download rows read, the manifest the request/s rows hit (each
    checked once end to end: digests of what comes back) and the tags the tags/list row pages."""
    for blob in [big, *smalls, config]:
        upload_monolithic(server, "bench/data", blob)
        download(server, "bench/data", blob, verify=True)
    push_manifest(server, "bench/data", "latest", config, smalls[0])
    for blob in (config, smalls[0]):
        upload_monolithic(server, "bench/tags", blob)
    put_manifests(server, "bench/tags", "tag-", config, smalls[0], count=TAGS_LISTED)
    upload_chunked(server, "bench/warmup", smalls[0], 1 * MiB)  # warm the code paths up
    upload_streamed(server, "bench/warmup", smalls[0])


class Profiler:
    """`--profile DIR`: py-spy record of each Cargobay server while each row runs on it."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.binary = shutil.which("py-spy") if directory else None
        if directory and not self.binary:
            raise BenchError("--profile needs py-spy on PATH (pip install py-spy)")

    def around(self, server: Server, row: Row, rnd: int) -> subprocess.Popen | None:
        if not self.binary or server.kind != "cargobay" or self.directory is None:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        out = self.directory / f"{server.label.replace(' ', '-')}-{row.key}-r{rnd}.txt"
        proc = subprocess.Popen([self.binary, "record", "--pid", str(server.process.pid), "--subprocesses",
                                 "--format", "raw", "--rate", "250", "--nonblocking", "-o", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(1.0)  # let it attach
        return proc

    @staticmethod
    def done(proc: subprocess.Popen | None) -> None:
        if proc is None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def versions(wrk: str | None, distribution: str, src: Path) -> list[str]:
    from importlib import metadata

    def pkg(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "missing"

    def cmd(*argv: str) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    rev = cmd("git", "-C", str(src), "describe", "--always", "--dirty")
    return [
        f"machine: {os.cpu_count()} CPUs (nproc), {cpu}, Linux {platform.release()}, "
        f"load average {os.getloadavg()[0]:.2f} at start",
        f"Cargobay {rev} ({src}), Python {platform.python_version()}, uvicorn {pkg('uvicorn')}, "
        f"starlette {pkg('starlette')}, httptools {pkg('httptools')}, uvloop {pkg('uvloop')}",
        f"peer: {cmd(distribution, '--version')}",
        "client: sendfile(2) uploads, threaded socket downloads; GET/s: "
        + (cmd(wrk, "-v").split(" Copyright")[0] if wrk else "asyncio keep-alive client (wrk not found)")
        + "; HEAD/s: asyncio keep-alive client (wrk waits for a body after HEAD)",
    ]


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def report(rows: list[Row], servers: list[Server], rounds: int) -> list[str]:
    peer = next(s for s in servers if s.kind == "distribution")
    ours = [s for s in servers if s.kind == "cargobay"]
    title_w = max(len(r.title) for r in rows) + 2
    head = f"{'row (median of ' + str(rounds) + ')':<{title_w}}{'unit':>6} {peer.label:>13}"
    for s in ours:
        head += f" {s.label:>12} {'ratio':>6}"
    out = [head, "-" * len(head)]
    below = 0
    for row in rows:
        if not row.samples:
            continue
        base = statistics.median(row.samples[peer.label])
        line = f"{row.title:<{title_w}}{row.unit:>6} {fmt(base):>13}"
        for s in ours:
            value = statistics.median(row.samples[s.label])
            ratio = value / base if base else 0.0
            below += ratio < 1.0
            line += f" {fmt(value):>12} {ratio:>5.2f}x"
        out.append(line)
    out.append("")
    out.append("server CPU per unit of work (user+system of the process tree; lower is better; ratio = "
               "peer / Cargobay, >= 1 means Cargobay is as frugal) - less sensitive to a busy machine:")
    for row in rows:
        if not row.costs:
            continue
        unit = "ms/MiB" if row.unit == "MiB/s" else "us/req"
        base = statistics.median(row.costs[peer.label])
        line = f"{row.title:<{title_w}}{unit:>6} {base:>13.2f}"
        for s in ours:
            value = statistics.median(row.costs[s.label])
            line += f" {value:>12.2f} {base / value if value else 0.0:>5.2f}x"
        out.append(line)
    out.append("")
    out.append("memory (VmRSS summed over the server's process tree, sampled every 20 ms while the rows ran):")
    for s in servers:
        if not s.peak_rss:
            continue
        line = f"  {s.label:<13} started {s.start_rss / MiB:5.1f} MiB, idle {s.idle_rss / MiB:5.1f} MiB"
        for phase, peak in s.peak_rss.items():
            line += f", {phase}s peak {peak / MiB:5.1f} MiB (+{(peak - s.idle_rss) / MiB:.1f})"
        if "upload" in s.peak_rss:
            flat = s.peak_rss["upload"] - s.idle_rss < 64 * MiB
            line += f", VmHWM after uploads {s.hwm_after_uploads / MiB:.1f} MiB"
            line += "; uploads flat" if flat else "; uploads NOT FLAT"
        out.append(line)
    out.append("  (started = once listening; idle = after the setup uploads and downloads, before the first row; "
               "flat = upload peak < idle + 64 MiB; VmHWM = per-process peak since start, summed)")
    out.append("")
    out.append("ratio = Cargobay / Distribution, higher is better, target >= 1.00x"
               + (f"; {below} cell(s) below target" if below else "; every cell meets it"))
    out.append("Cargobay wN = `registry serve --workers N`; Distribution uses every core (Go runtime).")
    return out


def raw_samples(rows: list[Row]) -> list[str]:
    out = ["per-round figures:"]
    for row in rows:
        for label, values in row.samples.items():
            out.append(f"  {row.key:<10} {label:<13} " + " ".join(fmt(v) for v in values))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Cargobay vs CNCF Distribution on loopback (see bench/README.md)")
    p.add_argument("--quick", action="store_true", help="small blobs, 1 round, short request/s runs")
    p.add_argument("--rounds", type=int, help="rounds per row (default 5, quick 1); the median is reported")
    p.add_argument("--workers", default="1,2", help="Cargobay worker counts to run, comma-separated (default 1,2)")
    p.add_argument("--only", help=f"comma-separated row keys: {','.join(ROW_KEYS)}")
    p.add_argument("--cargobay-src", type=Path, default=REPO_ROOT, help="Cargobay source tree (default: this repo)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME;src=DIR;python=EXE;VAR=VALUE",
                   help="also run this Cargobay (another tree, interpreter or CARGOBAY_* settings), e.g. to "
                        "measure a change in the same alternation; repeatable")
    p.add_argument("--distribution", default="docker-registry", help="Distribution binary")
    p.add_argument("--tmp", type=Path, help="parent directory for the temp dirs (default: system temp)")
    p.add_argument("--profile", type=Path, help="write py-spy raw profiles of the Cargobay servers here")
    p.add_argument("--seconds", type=float, help="duration of each request/s run (default 5, quick 2)")
    p.add_argument("--same-content", action="store_true",
                   help="upload rows send blobs the server has already (a push again) instead of new ones")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)
    args.big = (64 if args.quick else 256) * MiB
    args.small = (8 if args.quick else 32) * MiB
    args.chunk = 8 * MiB
    args.concurrent_uploads = 8
    args.concurrent_downloads = 16
    if args.only:
        args.only = {key.strip() for key in args.only.split(",") if key.strip()}
        unknown = args.only - set(ROW_KEYS)
        if unknown:
            p.error(f"--only: unknown row(s) {', '.join(sorted(unknown))}; known: {','.join(ROW_KEYS)}")
    try:
        args.worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        p.error(f"--workers: expected numbers like 1,2, got {args.workers!r}")
    if not args.worker_counts or min(args.worker_counts) < 1 or args.rounds < 1 or args.rounds > 50:
        p.error("need at least one worker count >= 1 and 1 <= --rounds <= 50")
    return args


def run(args: argparse.Namespace) -> int:
    """Measure (`measure`), then print the table, the costs and each round's figures."""

    def show(rows: list[Row], servers: list[Server]) -> None:
        print()
        for line in [*report(rows, servers, args.rounds), "", *raw_samples(rows)]:
            print(line)
        print(f"load average {os.getloadavg()[0]:.2f} at end")

    measure(args, show)
    return 0


def measure(args: argparse.Namespace, done: Callable[[list[Row], list[Server]], None]) -> None:
    """Start every server, run the rows in alternation, and hand the rows (each with its samples
    by server label) and the servers to `done` while the servers still run (bench_observability
    reads them); then stop them. Prints progress as it goes."""
    distribution = shutil.which(args.distribution)
    if not distribution:
        raise BenchError(f"{args.distribution} not found (apt-get install -y docker-registry)")
    wrk = shutil.which("wrk")
    profiler = Profiler(args.profile)
    for line in versions(wrk, distribution, args.cargobay_src):
        print(line, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="cargobay-bench-", dir=args.tmp))
    servers: list[Server] = []
    try:
        print(f"generating test data in {workdir} ...", flush=True)
        big = make_blob(workdir / "big.bin", args.big)
        smalls = [make_blob(workdir / f"small-{i}.bin", args.small) for i in range(args.concurrent_uploads)]
        config = make_blob(workdir / "config.bin", 1234)
        variants = [Variant("Cargobay", args.cargobay_src)]
        variants += [Variant.parse(text, args.cargobay_src) for text in args.variant]
        for variant in variants:
            if not (variant.src / "registry" / "__main__.py").is_file():
                raise BenchError(f"{variant.src} is not a Cargobay source tree")
        for variant in variants:
            for workers in args.worker_counts:
                servers.append(start_cargobay(variant, workdir, workers))
        servers.append(start_distribution(distribution, workdir))
        for server in servers:
            print(f"preparing {server.label} (pid {server.process.pid}, port {server.port}) ...", flush=True)
            _guard(server, functools.partial(prepare, server, big, smalls, config))
            server.idle_rss = rss_of(process_tree(server.process.pid))

        rows = build_rows(args, big, smalls, config, workdir, wrk)
        if args.only:
            rows = [r for r in rows if r.key in args.only]
        for row in rows:
            print(f"{row.title}: ", end="", flush=True)
            for rnd in range(args.rounds):
                k = rnd % len(servers)
                for server in servers[k:] + servers[:k]:  # A B C, B C A, ...: alternation, rotated start
                    spy = profiler.around(server, row, rnd)
                    try:
                        pids = process_tree(server.process.pid)
                        cpu0, t0 = cpu_of(pids), time.perf_counter()
                        if row.phase:
                            with RssSampler(server.process.pid) as sampler:
                                value = _guard(server, lambda row=row, server=server, rnd=rnd: row.run(server, rnd))
                            server.peak_rss[row.phase] = max(server.peak_rss.get(row.phase, 0), sampler.peak)
                        else:
                            value = _guard(server, lambda row=row, server=server, rnd=rnd: row.run(server, rnd))
                        cpu, elapsed = cpu_of(pids) - cpu0, time.perf_counter() - t0
                    finally:
                        profiler.done(spy)
                    row.samples.setdefault(server.label, []).append(value)
                    # work done = figure x time: MiB or requests; cost in CPU ms per MiB / us per request
                    scale = 1e3 if row.unit == "MiB/s" else 1e6
                    row.costs.setdefault(server.label, []).append(scale * cpu / max(value * elapsed, 1e-9))
                print(".", end="", flush=True)
            print(flush=True)
            if row.phase == "upload":
                for server in servers:
                    server.hwm_after_uploads = hwm_of(process_tree(server.process.pid))
        done(rows, servers)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _guard(server: Server, fn: Callable[[], float | None]):  # type: ignore[no-untyped-def]
    """Turn what can go wrong against one server into a BenchError that names it."""
    try:
        return fn()
    except BenchError as exc:
        raise BenchError(f"{server.label}: {exc}{_log_hint(server)}") from None
    except (OSError, ValueError, KeyError) as exc:
        state = "" if server.alive() else f" (server exited with {server.process.returncode})"
        raise BenchError(f"{server.label}: {type(exc).__name__}: {exc}{state}{_log_hint(server)}") from None


def _log_hint(server: Server) -> str:
    tail = server.log_tail(8)
    return f"\n--- {server.log_path.name} (last lines) ---\n{tail}" if tail else ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
