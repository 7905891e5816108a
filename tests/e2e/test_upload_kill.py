"""An upload survives `kill -9` of the registry mid-PATCH, on disk and on S3 (SeaweedFS).

A client has one chunk stored (202) and is streaming the next when the whole `registry serve`
process group gets SIGKILL, once the server has written part of that chunk (on disk: the file
grew; on S3: a part of the chunk is in the multipart upload). A new server on the same storage
reports a Range whose bytes are exactly the start of the blob; the client resumes from there and
the completed blob is the right one. On S3 the resumed upload is completed by a process that saw
none of its earlier bytes, so it verifies them by reading them back.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocispec.digest import Digest
from storage import paths
from tests.support.s3replicas import MiB, s3_config, s3_env, wait_for
from tests.support.s3servers import S3Server
from tests.support.servers import RunningServer, start_cargobay

from .conftest_s3 import s3_bucket, seaweedfs  # noqa: F401 - fixtures

REPO = "kill/resume"
FIRST = 6 * MiB  # stored before the kill: one 5 MiB part and a tail on S3
SECOND = 12 * MiB  # the chunk the kill cuts


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def killed_mid_body(server: RunningServer, method: str, path: str, body: bytes, written: Callable[[], bool]) -> None:
    """Stream `body` (a PATCH chunk, a POST's whole blob) and SIGKILL the server's process group
    once `written()` says part of it reached storage (the rest of the body is still on its way)."""
    with socket.create_connection((server.host, server.port), timeout=60) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {server.hostport}\r\n"
                     f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        sent = 0
        while not written():
            assert sent < len(body) - MiB, "the server stored nothing of the body before its last MiB"
            sock.sendall(body[sent:sent + 256 * 1024])
            sent += 256 * 1024
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(10)


def resume_and_finish(server: RunningServer, location: str, blob: bytes) -> int:
    """What a client does after the failure: ask where the upload stands, send the rest, finish."""
    path = location.removeprefix(location.split("/v2/")[0])
    with httpx.Client(base_url=server.url, timeout=60) as client:
        status = client.get(path)
        assert status.status_code == 204, status.text
        first, _, last = status.headers["Range"].partition("-")
        offset = int(last) + 1
        assert first == "0" and FIRST <= offset <= FIRST + SECOND, status.headers["Range"]
        r = client.patch(status.headers["Location"], content=blob[offset:],
                         headers={"Content-Range": f"{offset}-{len(blob) - 1}"})
        assert r.status_code == 202, r.text
        r = client.put(r.headers["Location"], params={"digest": sha256(blob)})
        assert r.status_code == 201, r.text
        served = client.get(f"/v2/{REPO}/blobs/{sha256(blob)}")
        assert served.status_code == 200 and served.content == blob
    return offset


def upload_and_kill(start: Callable[[], RunningServer], written: Callable[[str], Callable[[], bool]]) -> int:
    blob = random.Random(13).randbytes(FIRST + SECOND + MiB)
    server = start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            location = client.post(f"/v2/{REPO}/blobs/uploads/").headers["Location"]
            r = client.patch(location, content=blob[:FIRST], headers={"Content-Range": f"0-{FIRST - 1}"})
            assert r.status_code == 202 and r.headers["Range"] == f"0-{FIRST - 1}", r.text
            location = r.headers["Location"]
        upload_id = location.rstrip("/").rsplit("/", 1)[1].split("?")[0]
        killed_mid_body(server, "PATCH", location.removeprefix(server.url), blob[FIRST:FIRST + SECOND],
                        written(upload_id))
    finally:
        server.stop()
    restarted = start()
    try:
        return resume_and_finish(restarted, location, blob)
    finally:
        restarted.stop()


def test_an_upload_on_disk_resumes_after_kill_9_mid_patch(tmp_path: Path) -> None:
    root = tmp_path / "data"

    def start() -> RunningServer:
        return start_cargobay(tmp_path / "server", root=root)

    def written(upload_id: str) -> Callable[[], bool]:
        data = root / paths.upload_data(REPO, upload_id)
        return lambda: data.exists() and data.stat().st_size > FIRST

    offset = upload_and_kill(start, written)
    assert offset > FIRST  # what reached the file before the kill is kept


@pytest.fixture
def s3_start(tmp_path: Path, seaweedfs: S3Server, s3_bucket: str) -> Iterator[Callable[[], RunningServer]]:  # noqa: F811
    config: dict[str, Any] = s3_config(seaweedfs, s3_bucket, part_size=5 * MiB)
    yield lambda: start_cargobay(tmp_path / "server", config=config, env=s3_env(seaweedfs))


def test_an_upload_on_s3_resumes_after_kill_9_mid_patch(s3_start: Callable[[], RunningServer], seaweedfs: S3Server,  # noqa: F811
                                                        s3_bucket: str) -> None:  # noqa: F811
    client = seaweedfs.client()

    def written(upload_id: str) -> Callable[[], bool]:
        key = paths.upload_data(REPO, upload_id)

        def parts_beyond_the_first_chunk() -> bool:
            uploads = client.list_multipart_uploads(Bucket=s3_bucket, Prefix=key).get("Uploads", [])
            return any(len(client.list_parts(Bucket=s3_bucket, Key=key, UploadId=u["UploadId"]).get("Parts", [])) >= 2
                       for u in uploads)
        return lambda: wait_for_quietly(parts_beyond_the_first_chunk)

    offset = upload_and_kill(s3_start, written)
    # The chunk's part sent before the kill is no part of the saved state: the upload resumes where
    # the last completed PATCH left it, and the blob is right.
    assert offset == FIRST


def wait_for_quietly(condition: Callable[[], bool]) -> bool:
    """`condition()`, polled for a moment: the server writes a part while the client keeps sending."""
    try:
        return bool(wait_for(condition, 0.5, interval=0.05, what="a part"))
    except AssertionError:
        return False


def test_a_whole_blob_killed_mid_body_leaves_nothing_visible_on_s3(
        s3_start: Callable[[], RunningServer], seaweedfs: S3Server, s3_bucket: str) -> None:  # noqa: F811
    """POST ?digest= streams straight to the blob's key (a multipart upload there once it is over a
    part): killed mid-body, nothing is visible and the push simply runs again."""
    client = seaweedfs.client()
    blob = random.Random(17).randbytes(SECOND)
    digest = sha256(blob)
    key = paths.blob_data(Digest.parse(digest))
    server = s3_start()
    try:
        def a_part_is_stored() -> bool:
            uploads = client.list_multipart_uploads(Bucket=s3_bucket, Prefix=key).get("Uploads", [])
            return any(client.list_parts(Bucket=s3_bucket, Key=key, UploadId=u["UploadId"]).get("Parts")
                       for u in uploads)
        killed_mid_body(server, "POST", f"/v2/{REPO}/blobs/uploads/?digest={digest}", blob,
                        lambda: wait_for_quietly(a_part_is_stored))
    finally:
        server.stop()
    assert "Contents" not in client.list_objects_v2(Bucket=s3_bucket, Prefix=key)
    restarted = s3_start()
    try:
        with httpx.Client(base_url=restarted.url, timeout=60) as http:
            assert http.head(f"/v2/{REPO}/blobs/{digest}").status_code == 404
            r = http.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": digest}, content=blob)
            assert r.status_code == 201, r.text
            assert http.get(f"/v2/{REPO}/blobs/{digest}").content == blob
    finally:
        restarted.stop()
