"""The driver contract (storage/driver/base.py), run on every driver by the `driver` fixture:
fs on a temp dir, S3Driver on moto's server and on SeaweedFS. S3-only extras (presigned URLs,
check() failures, retries, option parsing) follow at the end."""

from __future__ import annotations

import hashlib
import http.server
import os
import random
import threading
import time
import tracemalloc
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.driver.base import FileWriter, StorageDriver, iter_chunks
from storage.driver.fs import FilesystemDriver
from storage.errors import (
    InvalidKey,
    InvalidOffset,
    ObjectBusy,
    PathNotFound,
    StorageConfigError,
    StorageUnavailable,
)
from tests.support.s3servers import S3Server
from tests.support.servers import free_port

MiB = 1024 * 1024
PART = 5 * MiB  # the S3 drivers' part size in these tests (conftest.S3_TEST_OPTIONS)


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def read_all(driver: StorageDriver, key: str, offset: int = 0, chunk: int = 1 * MiB) -> bytes:
    with driver.reader(key, offset) as stream:
        return b"".join(iter_chunks(stream, chunk))


def open_uploads(driver: StorageDriver) -> list[dict[str, Any]]:
    """Multipart uploads still open in an S3 driver's bucket below its prefix ([] for fs)."""
    if driver.name != "s3":
        return []
    bucket = driver.bucket  # type: ignore[attr-defined]
    resp = bucket.client.list_multipart_uploads(Bucket=bucket.name, Prefix=bucket.prefix)
    return list(resp.get("Uploads", []))


# -- small objects ---------------------------------------------------------------------------------
def test_put_get_and_atomic_replace(driver: StorageDriver) -> None:
    driver.put("a/b/obj", b"one")
    assert driver.get("a/b/obj") == b"one"
    driver.put("a/b/obj", b"two, longer")
    assert driver.get("a/b/obj") == b"two, longer"
    assert driver.stat("a/b/obj").size == len(b"two, longer")
    assert driver.list("a/b") == ["a/b/obj"]  # no temporary or hidden keys show


def test_get_with_a_limit_reads_only_the_start(driver: StorageDriver) -> None:
    """What the first line of an upload's state is read with (S3: a ranged GET, so the rest of a
    state holding most of a part is never sent)."""
    driver.put("l/obj", bytearray(b"first line\nthe rest"))  # a bytearray is put as bytes are
    assert driver.get("l/obj", 5) == b"first"
    assert driver.get("l/obj", 1000) == b"first line\nthe rest"
    driver.put("l/empty", b"")
    assert driver.get("l/empty", 5) == b""
    with pytest.raises(PathNotFound):
        driver.get("l/missing", 5)


def test_missing_keys_raise_path_not_found(driver: StorageDriver) -> None:
    driver.put("present/file", b"x")
    for call in (
        lambda: driver.get("absent/file"),
        lambda: driver.stat("absent/file"),
        lambda: driver.reader("absent/file"),
        lambda: driver.reader("absent/file", 3),
        lambda: driver.list("absent"),
        lambda: driver.list("present/file"),  # an object is not a prefix
        lambda: driver.delete("absent"),
        lambda: driver.move("absent/file", "present/other"),
        lambda: driver.get("present"),  # a prefix is not an object
    ):
        with pytest.raises(PathNotFound):
            call()
    assert driver.list("present") == ["present/file"]


def test_invalid_keys_are_refused(driver: StorageDriver) -> None:
    for key in ("", "../x", "a/../b", "a//b", "a/./b", "a\\b"):
        with pytest.raises(InvalidKey):
            driver.put(key, b"x")
        with pytest.raises(InvalidKey):
            driver.get(key)


# -- readers ---------------------------------------------------------------------------------------
def test_reader_streams_from_an_offset(driver: StorageDriver) -> None:
    data = blob(300 * 1024 + 17)
    driver.put("r/obj", data)
    assert read_all(driver, "r/obj", chunk=64 * 1024) == data
    assert read_all(driver, "r/obj", 1000) == data[1000:]
    with driver.reader("r/obj", len(data) - 5) as stream:
        assert stream.read(3) == data[-5:-2]
        assert stream.read(100) == data[-2:]
        assert stream.read(100) == b""
    with driver.reader("r/obj", len(data)) as stream:  # at EOF: an empty stream
        assert stream.read() == b""
    with pytest.raises(InvalidOffset):
        driver.reader("r/obj", len(data) + 1)


def test_reader_of_an_empty_object(driver: StorageDriver) -> None:
    driver.put("r/empty", b"")
    assert driver.get("r/empty") == b""
    assert read_all(driver, "r/empty") == b""
    assert driver.stat("r/empty").size == 0


# -- writers ---------------------------------------------------------------------------------------
def test_writer_commit_makes_the_object(driver: StorageDriver) -> None:
    data = blob(7 * MiB + 123)  # more than one part
    w = driver.writer("w/obj")
    assert isinstance(w, FileWriter)
    pieces: list[bytes | bytearray | memoryview] = [data[: 1 * MiB], bytearray(data[1 * MiB : 6 * MiB + 7]),
                                                     memoryview(data)[6 * MiB + 7 :]]
    for piece in pieces:
        assert w.write(piece) == len(piece)
    assert w.size == len(data)
    w.commit()
    w.close()  # a no-op after commit
    assert driver.get("w/obj") == data
    assert driver.stat("w/obj").size == len(data)
    assert open_uploads(driver) == []


def test_empty_writer_commit_makes_an_empty_object(driver: StorageDriver) -> None:
    driver.writer("w/empty").commit()
    assert driver.get("w/empty") == b""
    assert driver.stat("w/empty").size == 0


def test_append_across_writer_instances(driver: StorageDriver) -> None:
    a, b, c = blob(1000, 1), blob(2000, 2), blob(3, 3)
    w = driver.writer("up/data")
    w.write(a)
    w.close()
    assert driver.stat("up/data").size == len(a)  # the upload store reads the size this way
    w = driver.writer("up/data", append=True)
    assert w.size == len(a)
    w.write(b)
    w.close()
    w = driver.writer("up/data", append=True)
    assert w.size == len(a) + len(b)
    w.write(c)
    w.commit()
    assert driver.get("up/data") == a + b + c


def test_append_from_another_replica_across_part_boundaries(
    driver: StorageDriver, driver_replica: StorageDriver
) -> None:
    """Sessions below the 5 MiB S3 minimum part, then sessions that cross it and the part size,
    alternating between two driver instances (for S3: separate clients, like two replicas)."""
    sizes = [1 * MiB, 1 * MiB + 512 * 1024, 3 * MiB, 6 * MiB + 1, 100, 4 * MiB]
    expected = hashlib.sha256()
    total = 0
    for i, size in enumerate(sizes):
        d = (driver, driver_replica)[i % 2]
        w = d.writer("rep/data", append=i > 0)
        assert w.size == total
        chunk = blob(size, 10 + i)
        for piece in iter_chunks_of(chunk, 256 * 1024):
            w.write(piece)
        expected.update(chunk)
        total += size
        w.close()
        assert (driver, driver_replica)[(i + 1) % 2].stat("rep/data").size == total
    w = driver_replica.writer("rep/data", append=True)
    assert w.size == total
    w.commit()
    assert driver.stat("rep/data").size == total
    got = hashlib.sha256()
    with driver.reader("rep/data") as stream:
        for chunk in iter_chunks(stream, 1 * MiB):
            got.update(chunk)
    assert got.hexdigest() == expected.hexdigest()
    assert open_uploads(driver) == []


def test_many_tiny_appends(driver: StorageDriver, driver_replica: StorageDriver) -> None:
    pieces = [blob(37 + i, i) for i in range(30)]
    for i, piece in enumerate(pieces):
        w = (driver, driver_replica)[i % 2].writer("tiny/data", append=True)
        w.write(piece)
        w.close()
    w = driver.writer("tiny/data", append=True)
    w.commit()
    assert driver_replica.get("tiny/data") == b"".join(pieces)


def test_append_to_a_committed_object(driver: StorageDriver) -> None:
    for key, first in (("c/small", blob(1000, 1)), ("c/large", blob(6 * MiB, 2))):
        driver.put(key, first)
        w = driver.writer(key, append=True)
        assert w.size == len(first)
        w.write(b"more")
        w.commit()
        assert driver.get(key) == first + b"more"
    assert open_uploads(driver) == []


def test_cancel_discards_everything(driver: StorageDriver) -> None:
    driver.put("x/sibling", b"s")
    w = driver.writer("x/data")
    w.write(blob(6 * MiB))  # a part is uploaded on S3
    w.close()
    w = driver.writer("x/data", append=True)
    w.write(b"tail")
    w.cancel()
    with pytest.raises(PathNotFound):
        driver.stat("x/data")
    with pytest.raises(PathNotFound):
        driver.get("x/data")
    assert driver.list("x") == ["x/sibling"]
    assert open_uploads(driver) == []


def test_fresh_writer_replaces_an_unfinished_upload(driver: StorageDriver) -> None:
    w = driver.writer("f/data")
    w.write(blob(6 * MiB, 1))
    w.close()
    w = driver.writer("f/data")  # append=False: start over
    assert w.size == 0
    w.write(b"new")
    w.commit()
    assert driver.get("f/data") == b"new"
    assert open_uploads(driver) == []


def test_memory_stays_bounded_while_writing_many_small_chunks(driver: StorageDriver) -> None:
    """~40 MiB in 64 KiB writes: the writer's peak allocation stays within a few part sizes. The
    caller reuses (mutates) its buffer after each write, so the writer must not keep references."""
    total_chunks = 640
    block = bytearray(blob(64 * 1024))
    expected = hashlib.sha256()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        w = driver.writer("mem/data")
        for i in range(total_chunks):
            block[:8] = i.to_bytes(8, "big")
            w.write(block)
            expected.update(block)
        w.commit()
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert peak < 3 * PART, f"writer peaked at {peak / MiB:.1f} MiB for {total_chunks * 64 // 1024} MiB written"
    got = hashlib.sha256()
    with driver.reader("mem/data") as stream:
        for chunk in iter_chunks(stream, 4 * MiB):
            got.update(chunk)
    assert got.hexdigest() == expected.hexdigest()


# -- stat, list, walk, delete ----------------------------------------------------------------------
def test_stat_of_objects_and_prefixes(driver: StorageDriver) -> None:
    before = time.time()
    driver.put("s/t/obj", b"12345")
    info = driver.stat("s/t/obj")
    assert (info.key, info.size, info.is_dir) == ("s/t/obj", 5, False)
    assert before - 300 < info.modified < time.time() + 300  # clocks of S3 servers may differ a bit
    for prefix in ("s", "s/t"):
        assert driver.stat(prefix).is_dir
        assert driver.stat(prefix).key == prefix
    for missing in ("s/t/obj/deeper", "s/u", "s/t/ob"):
        with pytest.raises(PathNotFound):
            driver.stat(missing)


def test_list_gives_direct_children_sorted(driver: StorageDriver) -> None:
    for key in ("a/x", "a/y/z", "a/y/w", "a/zz/q/r", "ab/c", "a0"):
        driver.put(key, b"v")
    w = driver.writer("a/upload")  # an upload in progress is listed under its key
    w.write(b"partial")
    w.close()
    assert driver.list("a") == ["a/upload", "a/x", "a/y", "a/zz"]
    assert driver.list("a/y") == ["a/y/w", "a/y/z"]
    assert driver.list("a/zz/q") == ["a/zz/q/r"]


def test_walk_finds_every_object_below(driver: StorageDriver) -> None:
    expected = {f"w/{i % 3}/{j}/obj{i}": i + 1 for i in range(8) for j in ("p", "q")}
    for key, size in expected.items():
        driver.put(key, b"x" * size)
    driver.put("wx/not-below", b"no")
    driver.put("w0", b"no")
    w = driver.writer("w/1/upload")
    w.write(b"12")
    w.close()
    expected["w/1/upload"] = 2
    found = {info.key: info.size for info in driver.walk("w")}
    assert found == expected
    assert all(not info.is_dir for info in driver.walk("w/1"))
    assert {info.key for info in driver.walk("w/2/q")} == {k for k in expected if k.startswith("w/2/q/")}


def test_delete_an_object_or_everything_below_a_prefix(driver: StorageDriver) -> None:
    below = [f"p/q/{i}/{j}" for i in range(4) for j in range(2)]
    for key in below:
        driver.put(key, b"v")
    for key in ("p/qr", "p/q2/x", "p/q0"):
        driver.put(key, b"keep")
    w = driver.writer("p/q/upload/data")
    w.write(blob(6 * MiB))  # an open multipart upload on S3
    w.close()
    driver.delete("p/q")
    assert driver.list("p") == ["p/q0", "p/q2", "p/qr"]
    for key in [*below, "p/q/upload/data"]:
        with pytest.raises(PathNotFound):
            driver.stat(key)
    with pytest.raises(PathNotFound):
        driver.stat("p/q")
    with pytest.raises(PathNotFound):
        driver.delete("p/q")
    assert open_uploads(driver) == []
    driver.delete("p/qr")
    assert driver.list("p") == ["p/q0", "p/q2"]


def test_delete_an_upload_in_progress(driver: StorageDriver) -> None:
    w = driver.writer("d/data")
    w.write(blob(6 * MiB))
    w.close()
    driver.delete("d/data")
    with pytest.raises(PathNotFound):
        driver.stat("d/data")
    assert open_uploads(driver) == []


# -- move ------------------------------------------------------------------------------------------
def test_move_and_move_onto_an_existing_key(driver: StorageDriver) -> None:
    driver.put("m/src", b"first")
    driver.move("m/src", "n/deep/dst")
    assert driver.get("n/deep/dst") == b"first"
    with pytest.raises(PathNotFound):
        driver.get("m/src")
    driver.put("m/src2", b"second")
    driver.move("m/src2", "n/deep/dst")
    assert driver.get("n/deep/dst") == b"second"
    with pytest.raises(PathNotFound):
        driver.stat("m/src2")


def test_move_of_a_large_object(driver: StorageDriver) -> None:
    """13 MiB is over the S3 test drivers' multipart-copy threshold: copied in ranges server-side."""
    data = blob(13 * MiB + 5)
    w = driver.writer("big/upload")
    for piece in iter_chunks_of(data, 1 * MiB):
        w.write(piece)
    w.commit()
    driver.move("big/upload", "big/blob")
    assert hashlib.sha256(read_all(driver, "big/blob")).digest() == hashlib.sha256(data).digest()
    with pytest.raises(PathNotFound):
        driver.stat("big/upload")
    assert open_uploads(driver) == []


# -- url_for and check -----------------------------------------------------------------------------
def test_url_for(driver: StorageDriver, driver_kind: str, store_factory: Callable[..., StorageDriver]) -> None:
    driver.put("u/obj", b"presigned bytes")
    assert driver.url_for("u/obj") is None  # fs never; S3 only with redirect on
    if driver_kind == "fs":
        return
    redirecting = store_factory(redirect=True)
    url = redirecting.url_for("u/obj", expires_in=60)
    assert url is not None and url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - our presigned http URL; no credentials
        assert resp.read() == b"presigned bytes"
    head_url = redirecting.url_for("u/obj", method="HEAD")
    assert head_url is not None
    head = urllib.request.Request(head_url, method="HEAD")  # noqa: S310 - our presigned http URL
    with urllib.request.urlopen(head, timeout=10) as resp:  # noqa: S310
        assert int(resp.headers["Content-Length"]) == len(b"presigned bytes")
    assert redirecting.url_for("u/obj", method="PUT") is None


def test_check_passes_on_a_working_store(driver: StorageDriver) -> None:
    driver.check()
    driver.put("after/check", b"ok")
    assert driver.list("after") == ["after/check"]  # the probe leaves nothing behind


def test_check_fails_with_one_line_on_an_unwritable_fs_root(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageConfigError) as info:
        FilesystemDriver(tmp_path / "file" / "root").check()
    assert "\n" not in str(info.value) and "not writable" in str(info.value)


# -- declared capabilities -------------------------------------------------------------------------
def test_a_driver_keeps_what_its_capabilities_declare(driver: StorageDriver,
                                                      store_factory: Callable[..., StorageDriver]) -> None:
    """Callers choose by `capabilities` and never probe, so each flag must hold: URLs exactly when
    declared, readers that are OS files at the offset for sendfile, a move that waits for writers."""
    data = blob(100_000)
    driver.put("caps/obj", data)
    for d in (driver, store_factory(redirect=True)):
        caps = d.capabilities
        assert (d.url_for("caps/obj") is not None) == caps.presigned_urls
        with d.reader("caps/obj", 1000) as stream:
            if caps.sendfile:  # sendfile(2) reads the descriptor from its current position
                fd = stream.fileno()
                assert os.lseek(fd, 0, os.SEEK_CUR) == 1000
                assert os.pread(fd, 10, 1000) == data[1000:1010]
            assert stream.read(10) == data[1000:1010]
    if driver.capabilities.appends_in_place:
        writer = driver.writer("caps/upload")
        writer.write(b"still arriving")
        try:
            with pytest.raises(ObjectBusy):
                driver.move("caps/upload", "caps/moved")
        finally:
            writer.close()
        driver.move("caps/upload", "caps/moved")
        assert driver.get("caps/moved") == b"still arriving"


# -- S3 only ---------------------------------------------------------------------------------------
def s3_driver(server: S3Server, bucket: str, **overrides: Any) -> StorageDriver:
    from storage.driver.s3 import S3Driver

    return S3Driver(**server.driver_options(bucket, **overrides))


@pytest.mark.parametrize("server_fixture", ["moto_server", "seaweedfs_server"])
def test_s3_check_names_a_missing_bucket(request: pytest.FixtureRequest, server_fixture: str) -> None:
    server: S3Server = request.getfixturevalue(server_fixture)
    with pytest.raises(StorageConfigError) as info:
        s3_driver(server, f"no-such-bucket-{uuid.uuid4().hex[:8]}").check()
    message = str(info.value)
    assert "\n" not in message and "does not exist" in message and "no-such-bucket-" in message


def test_s3_check_names_rejected_credentials(seaweedfs_server: S3Server, seaweedfs_bucket: str) -> None:
    """SeaweedFS checks signatures (moto does not), so a wrong secret really fails."""
    s3_driver(seaweedfs_server, seaweedfs_bucket).check()
    for overrides in ({"secret_key": "wrong-secret"}, {"access_key": "unknown-key"}):
        with pytest.raises(StorageConfigError) as info:
            s3_driver(seaweedfs_server, seaweedfs_bucket, **overrides).check()
        message = str(info.value)
        assert "\n" not in message and "credentials were rejected" in message, message
    # At run time the same failure is a StorageConfigError too, not a crash or a PathNotFound.
    with pytest.raises(StorageConfigError):
        s3_driver(seaweedfs_server, seaweedfs_bucket, secret_key="wrong-secret").get("any/key")


def test_s3_check_names_an_unreachable_endpoint() -> None:
    pytest.importorskip("boto3")
    from storage.driver.s3 import S3Driver

    port = free_port()  # nothing listens there
    d = S3Driver("bucket", endpoint_url=f"http://127.0.0.1:{port}", access_key="a", secret_key="b",
                 region="us-east-1", max_attempts=1, connect_timeout=2)
    with pytest.raises(StorageConfigError) as info:
        d.check()
    assert "\n" not in str(info.value) and "unreachable" in str(info.value)
    with pytest.raises(StorageUnavailable):
        d.get("some/key")


class _ScriptedS3(http.server.ThreadingHTTPServer):
    """A loopback HTTP server answering each request with the next scripted response:
    (status, headers, body, bytes to actually send or None for all)."""

    def __init__(self, script: list[tuple[int, dict[str, str], bytes, int | None]]) -> None:
        self.script = script
        self.requests: list[tuple[str, str, str | None]] = []
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ScriptedHandler(http.server.BaseHTTPRequestHandler):
    server: _ScriptedS3

    def _answer(self) -> None:
        self.server.requests.append((self.command, self.path, self.headers.get("Range")))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, headers, body, send = self.server.script.pop(0) if self.server.script else (500, {}, b"", None)
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body[:send] if send is not None else body)
        if send is not None:
            self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def scripted_s3() -> Iterator[Callable[..., tuple[_ScriptedS3, StorageDriver]]]:
    pytest.importorskip("boto3")
    from storage.driver.s3 import S3Driver

    servers: list[_ScriptedS3] = []

    Script = list[tuple[int, dict[str, str], bytes, int | None]]

    def start(script: Script, **options: Any) -> tuple[_ScriptedS3, StorageDriver]:
        server = _ScriptedS3(script)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        d = S3Driver("bucket", endpoint_url=server.url, access_key="a", secret_key="b", region="us-east-1",
                     addressing_style="path", **options)
        return server, d

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


SLOW_DOWN = (503, {"Content-Type": "application/xml"},
             b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>", None)
OBJECT_HEADERS = {"Last-Modified": "Sun, 01 Jan 2023 00:00:00 GMT", "ETag": '"abc"'}


def test_s3_throttling_is_retried_then_succeeds(scripted_s3: Callable[..., Any]) -> None:
    server, d = scripted_s3([SLOW_DOWN, (200, OBJECT_HEADERS, b"payload", None)], max_attempts=2)
    assert d.get("k") == b"payload"
    assert len(server.requests) == 2


def test_s3_that_stays_down_raises_storage_unavailable(scripted_s3: Callable[..., Any]) -> None:
    server, d = scripted_s3([SLOW_DOWN] * 2, max_attempts=2)
    with pytest.raises(StorageUnavailable):
        d.get("k")
    assert len(server.requests) == 2  # botocore retried once, then the driver gave up
    server, d = scripted_s3([(500, {}, b"", None), (502, {}, b"", None)], max_attempts=1)
    for call in (lambda: d.put("k", b"v"), lambda: d.stat("k")):
        with pytest.raises(StorageUnavailable):
            call()


def test_s3_reader_resumes_a_broken_stream_with_a_range(scripted_s3: Callable[..., Any]) -> None:
    data = blob(100_000)
    server, d = scripted_s3([
        (200, OBJECT_HEADERS, data, 40_000),  # the connection drops after 40,000 bytes
        (206, {**OBJECT_HEADERS, "Content-Range": f"bytes 40000-{len(data) - 1}/{len(data)}"}, data[40_000:], None),
    ])
    with d.reader("k") as stream:
        got = b"".join(iter_chunks(stream, 16 * 1024))
    assert got == data
    assert server.requests[1][2] == "bytes=40000-"


def test_s3_options_from_settings() -> None:
    pytest.importorskip("boto3")
    from storage import driver_options, open_driver
    from storage.driver.s3 import S3Driver

    def create_driver(kind: str, values: dict[str, Any]) -> StorageDriver:
        return open_driver(driver_options(kind, values))

    d = create_driver("s3", {
        "bucket": "b", "prefix": "/registry/", "region": "eu-west-1", "endpoint_url": "http://127.0.0.1:9",
        "addressing_style": "virtual", "part_size": str(8 * MiB), "redirect": "true", "max_attempts": "4",
        "retry_mode": "adaptive", "access_key": None, "secret_key": None,
    })
    assert isinstance(d, S3Driver)
    assert (d.bucket.name, d.bucket.prefix, d.options.part_size, d.options.redirect) == ("b", "registry", 8 * MiB, True)
    assert d.bucket.full_key("v1/blobs/x") == "registry/v1/blobs/x"
    with pytest.raises(InvalidKey):
        d.bucket.full_key("v1/.cargobay-upload-data")  # reserved for the driver's own sidecars
    for bad in ({"bucket": "b", "part_size": 1024}, {"bucket": "b", "addressing_style": "dns"},
                {"bucket": "b", "bogus": 1}, {"prefix": "p"}, {"bucket": "b", "redirect": "maybe"},
                {"bucket": "b", "access_key": "only-one"}):
        with pytest.raises(StorageConfigError):
            create_driver("s3", bad)


def iter_chunks_of(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_list_page_pages_through_keys_in_order(driver: StorageDriver) -> None:
    # Directories of one level, nested ones and files side by side, as the listing index lays them
    # out (storage.paths); page boundaries fall inside directories and between them.
    keys = sorted(f"p/{a}/{b}/!" for a in ("aaa", "aab", "b!!", "zzz") for b in ("000", "0-1", "x!!"))
    keys += ["p/aaa/!", "p/!"]
    keys.sort()
    for key in reversed(keys):
        driver.put(key, b"")
    driver.put("p0/outside", b"")
    driver.put("o/outside", b"")
    assert driver.list_page("p", "", 1000) == keys
    for size in (1, 2, 5, len(keys)):
        seen: list[str] = []
        after = ""
        while True:
            page = driver.list_page("p", after, size)
            assert len(page) <= size
            seen += page
            if len(page) < size:
                break
            after = page[-1]
        assert seen == keys
    # Any string can start a page, not only a key that exists (but not a prefix with keys below it:
    # SeaweedFS then skips everything below it, see the protocol).
    for start in ("p/aab/0", "p/aab/0-1/!", "p/aab/!", "p/aab/zz!/!", "p/aa!/!", "p/b", "p/c", "o", "p/", "p/zzz/x"):
        assert driver.list_page("p", start, 1000) == [key for key in keys if key > start]
    assert driver.list_page("p", "q", 10) == []
    assert driver.list_page("nothing/here", "", 10) == []
    assert driver.list_page("p", "", 0) == []
    # Deleted keys are not listed.
    driver.delete_many(["p/aaa/!", "p/aab/000/!"])
    assert driver.list_page("p", "p/!", 5) == ["p/aaa/0-1/!", "p/aaa/000/!", "p/aaa/x!!/!", "p/aab/0-1/!",
                                                 "p/aab/x!!/!"]
