"""What the server does with clients that misbehave at the HTTP level, driven over raw sockets
against a real `registry serve`: hang-ups mid-body or mid-download, bodies shorter or longer than their
Content-Length, TLS spoken to the plain-HTTP port, garbage, endless or slow-loris headers, idle
keep-alive connections and the connection limit. Each is answered with the OCI error JSON where
anyone is left to read it, logged in one line of ours (never a traceback), and the server keeps
serving."""

from __future__ import annotations

import hashlib
import random
import select
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import RunningServer, serving, start_cargobay

HANG_GUARD = 30.0  # seconds: only keeps a broken server from hanging the suite, never a timing assertion


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of its own (its log is read) with short header and keep-alive timeouts."""
    yield from serving(start_cargobay(tmp_path_factory.mktemp("hygiene"), env={
        "CARGOBAY_HTTP_HEADER_TIMEOUT": "2s", "CARGOBAY_HTTP_KEEPALIVE_TIMEOUT": "2s"}))


# -- helpers ---------------------------------------------------------------------------------------
def connect(server: RunningServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=HANG_GUARD)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response (status, lower-cased headers, body by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed this connection (EOF or reset), waiting at most HANG_GUARD."""
    ready, _, _ = select.select([sock], [], [], HANG_GUARD)
    if not ready:
        return False
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def wait_for_log(server: RunningServer, needle: str) -> str:
    deadline = time.monotonic() + HANG_GUARD
    while needle not in server.log():
        assert time.monotonic() < deadline, f"{needle!r} never appeared in the log:\n{server.log()[-3000:]}"
        time.sleep(0.05)
    return server.log()


def start_upload(server: RunningServer, repo: str) -> str:
    r = httpx.post(f"{server.url}/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    return r.headers["location"]


def upload_range(server: RunningServer, location: str) -> str:
    r = httpx.get(f"{server.url}{location}")
    assert r.status_code == 204, r.text
    return r.headers["range"]


def assert_oci_error(status: int, headers: dict[str, str], body: bytes, want_status: int, code: str) -> None:
    assert status == want_status, body
    assert headers["content-type"].startswith("application/json")
    assert code in body.decode(), body


def assert_still_serving(server: RunningServer) -> None:
    assert httpx.get(f"{server.url}/v2/", timeout=HANG_GUARD).status_code == 200


def lines_with(log: str, text: str) -> list[str]:
    return [line for line in log.splitlines() if text in line]


# -- hang-ups ------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["close", "reset"])
def test_hangup_in_an_upload_is_one_info_line(strict: RunningServer, how: str) -> None:
    location = start_upload(strict, f"hygiene/hangup-{how}")
    sock = connect(strict)
    sock.sendall(f"PATCH {location} HTTP/1.1\r\nHost: {strict.hostport}\r\nContent-Length: {1 << 20}\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + b"x" * 65536)
    if how == "reset":
        time.sleep(0.2)  # let the bytes be read: a reset discards what the server has not read yet
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    log = wait_for_log(strict, location)
    time.sleep(0.5)  # a second line (a traceback) would follow right away
    log = strict.log()
    assert "Traceback" not in log
    mentions = lines_with(log, location)
    assert len(mentions) == 1 and "INFO" in mentions[0] and "PATCH" in mentions[0], mentions
    if how == "close":
        assert "65536" in mentions[0]  # the bytes received
        assert upload_range(strict, location) == "0-65535"  # kept: the client can resume from there
    assert_still_serving(strict)


def test_hangup_in_a_manifest_put_is_one_info_line(strict: RunningServer) -> None:
    path = "/v2/hygiene/manifest-hangup/manifests/v1"
    sock = connect(strict)
    sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: {strict.hostport}\r\nContent-Length: 5000\r\n"
                 "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\r\n{\"schemaVersion\": 2,".encode())
    sock.close()
    wait_for_log(strict, path)
    time.sleep(0.5)
    log = strict.log()
    assert "Traceback" not in log
    assert len(lines_with(log, path)) == 1
    assert httpx.get(f"{strict.url}{path}").status_code == 404  # nothing half-stored


@pytest.mark.parametrize("how", ["close", "reset"])
def test_hangup_in_a_blob_download_is_one_info_line(strict: RunningServer, how: str) -> None:
    blob = random.Random(how).randbytes(32 << 20)  # larger than the socket buffers: the send is cut short
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    repo = f"hygiene/download-{how}"
    assert httpx.post(f"{strict.url}/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=blob,
                      timeout=HANG_GUARD).status_code == 201
    path = f"/v2/{repo}/blobs/{digest}"
    sock = connect(strict)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {strict.hostport}\r\n\r\n".encode())
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    wait_for_log(strict, path)
    time.sleep(0.5)
    log = strict.log()
    assert "Traceback" not in log
    assert len(lines_with(log, path)) == 1
    r = httpx.get(f"{strict.url}{path}", timeout=HANG_GUARD)  # the next download is whole
    assert r.status_code == 200 and r.content == blob


# -- bodies that do not match their Content-Length -------------------------------------------------
def test_body_shorter_than_its_content_length_gets_size_invalid(strict: RunningServer) -> None:
    location = start_upload(strict, "hygiene/short-body")
    with connect(strict) as sock:
        sock.sendall(f"PATCH {location} HTTP/1.1\r\nHost: {strict.hostport}\r\nContent-Length: {1 << 20}\r\n\r\n"
                     .encode() + b"y" * 1000)
        sock.shutdown(socket.SHUT_WR)  # the client says it is done: 1000 bytes, not 1 MiB
        status, headers, body = read_response(sock)
    assert_oci_error(status, headers, body, 400, "SIZE_INVALID")
    assert b"1000" in body
    assert upload_range(strict, location) == "0-999"  # what did arrive is kept, as the Range says
    assert "Traceback" not in strict.log()
    assert_still_serving(strict)


def test_body_longer_than_its_content_length_gets_size_invalid(strict: RunningServer) -> None:
    location = start_upload(strict, "hygiene/long-body")
    with connect(strict) as sock:
        sock.sendall(f"PATCH {location} HTTP/1.1\r\nHost: {strict.hostport}\r\nContent-Length: 10\r\n\r\n"
                     .encode() + b"z" * 30)
        status, headers, body = read_response(sock)
        assert_oci_error(status, headers, body, 400, "SIZE_INVALID")
        assert headers.get("connection") == "close"
        assert closed_by_server(sock)
    assert "Invalid HTTP request" not in strict.log()
    assert_still_serving(strict)


def test_malformed_chunked_body_gets_size_invalid(strict: RunningServer) -> None:
    location = start_upload(strict, "hygiene/bad-chunks")
    with connect(strict) as sock:
        sock.sendall(f"PATCH {location} HTTP/1.1\r\nHost: {strict.hostport}\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\nhello\r\nnot-a-chunk-size\r\n".encode())
        status, headers, body = read_response(sock)
    assert_oci_error(status, headers, body, 400, "SIZE_INVALID")
    assert_still_serving(strict)


def test_garbage_gets_the_oci_error_json(strict: RunningServer) -> None:
    with connect(strict) as sock:
        sock.sendall(b"\x01\x02 not http at all\r\n\r\n")
        status, headers, body = read_response(sock)
    assert_oci_error(status, headers, body, 400, "UNSUPPORTED")
    assert_still_serving(strict)


def test_endless_headers_are_cut_off_at_one_mebibyte(strict: RunningServer) -> None:
    line = b"X-Filler: " + b"f" * 8180 + b"\r\n"  # 8 KiB a line
    with connect(strict) as sock:
        sock.sendall(f"GET /v2/ HTTP/1.1\r\nHost: {strict.hostport}\r\n".encode() + line * 130)  # > 1 MiB
        status, headers, body = read_response(sock)
    assert_oci_error(status, headers, body, 431, "SIZE_INVALID")
    assert_still_serving(strict)


# -- TLS to the plain port -------------------------------------------------------------------------
def test_tls_to_the_plain_port_is_logged_once_per_client(strict: RunningServer) -> None:
    context = ssl.create_default_context()
    for _ in range(5):
        with connect(strict) as raw, pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname="localhost")
    log = wait_for_log(strict, "speaks TLS to this plain-HTTP port")
    assert len(lines_with(log, "speaks TLS to this plain-HTTP port")) == 1
    assert "configure http.tls" in log
    assert "Invalid HTTP request" not in log  # uvicorn's per-attempt warning is gone
    assert_still_serving(strict)


# -- slow clients and idle connections --------------------------------------------------------------
def test_slow_loris_headers_are_cut_off_at_the_header_timeout(strict: RunningServer) -> None:
    sock = connect(strict)
    sock.sendall(f"GET /v2/ HTTP/1.1\r\nHost: {strict.hostport}\r\n".encode())
    deadline = time.monotonic() + HANG_GUARD
    served_meanwhile = False
    closed = False
    while time.monotonic() < deadline and not closed:
        ready, _, _ = select.select([sock], [], [], 0.5)  # one header line every half second
        if ready:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            assert data == b"", f"the server answered a request it never got in full: {data!r}"
            closed = True
            break
        try:
            sock.sendall(b"X-Slow: still here\r\n")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        if not served_meanwhile:
            assert_still_serving(strict)  # a normal client is unaffected
            served_meanwhile = True
    sock.close()
    assert closed, "the slow client kept its connection"
    assert served_meanwhile


def test_a_connection_that_sends_nothing_is_closed(strict: RunningServer) -> None:
    with connect(strict) as sock:
        assert closed_by_server(sock)


def test_idle_keepalive_connection_is_closed(strict: RunningServer) -> None:
    with connect(strict) as sock:
        sock.sendall(f"GET /v2/ HTTP/1.1\r\nHost: {strict.hostport}\r\n\r\n".encode())
        status, _, _ = read_response(sock)
        assert status == 200
        assert closed_by_server(sock)  # http.keepalive_timeout


def test_connection_limit_closes_idle_connections_then_answers_503(tmp_path: Path) -> None:
    server = start_cargobay(tmp_path, env={"CARGOBAY_HTTP_MAX_CONNECTIONS": "1"})
    request = f"GET /v2/ HTTP/1.1\r\nHost: {server.hostport}\r\n\r\n".encode()
    try:
        idle = connect(server)
        idle.sendall(request)
        assert read_response(idle)[0] == 200
        with connect(server) as second:  # over the limit: the idle connection makes room
            second.sendall(request)
            assert read_response(second)[0] == 200
            assert closed_by_server(idle)
            with connect(server) as busy, connect(server) as refused:
                busy.sendall(b"GET /v2/ HTTP/1.1\r\n")  # mid-headers: not idle, so it keeps its place
                assert closed_by_server(second)  # the idle one went to make room for `busy`
                refused.sendall(request)
                status, headers, body = read_response(refused)
                assert_oci_error(status, headers, body, 503, "UNAVAILABLE")
                assert headers["retry-after"] == "1"
        idle.close()
        assert "Traceback" not in server.log()
    finally:
        server.stop()
