"""S3 stops in the middle of an upload and comes back: clients get a clear 503 with the OCI error
JSON (not a hang, not a 500), `/healthz` says so, nothing half-written becomes visible, and once S3
returns the same replicas recover by themselves: the upload continues from the offset it really
has, completes with the right digest, and skopeo's retry of a failed push succeeds.

This module runs its own SeaweedFS (it is stopped and restarted in place: same ports, same data).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.images import simple_image, write_oci_layout
from tests.support.s3replicas import MiB, logs, restart_s3, start_replicas, stop_all, stop_s3, wait_for
from tests.support.s3servers import S3Server, serving, start_seaweedfs
from tests.support.servers import RunningServer

from .clients import Skopeo, get_blob, sha256_of, verify_pushed_image

# Few, quick retries so that "S3 stays down" is reached in a second or two, not after minutes.
S3_OPTIONS = {"part_size": 5 * MiB, "max_attempts": 2, "connect_timeout": 2, "read_timeout": 10,
              "multipart_copy_threshold": 8 * MiB, "multipart_copy_part_size": 5 * MiB}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    yield from serving(start_seaweedfs(tmp_path_factory.mktemp("outage-seaweedfs")))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> Iterator[list[RunningServer]]:
    servers = start_replicas(tmp_path_factory.mktemp("outage"), s3, s3.create_bucket(), 2, **S3_OPTIONS)
    yield servers
    stop_all(servers)


def assert_unavailable(response: httpx.Response, what: str) -> None:
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json"), what
    if response.request.method != "HEAD":
        (error,) = response.json()["errors"]
        assert error["code"] == "UNAVAILABLE", (what, error)


def test_s3_down_mid_upload_gives_503_then_the_upload_resumes_and_completes(
        s3: S3Server, pair: list[RunningServer], skopeo: Skopeo, tmp_path: Path) -> None:
    a, b = pair
    data = random.Random(42).randbytes(11 * MiB + 777)
    digest = sha256_of(data)
    first, second = data[:6 * MiB], data[6 * MiB:]
    earlier = random.Random(1).randbytes(100_000)
    image = simple_image("outage-skopeo", layer_count=2)
    layout = write_oci_layout(tmp_path / "layout", image, "v1")

    with httpx.Client(timeout=60) as http:
        # Something already stored, to check it survives untouched.
        assert http.post(f"{a.url}/v2/outage/blobs/uploads/", params={"digest": sha256_of(earlier)},
                         content=earlier).status_code == 201
        r = http.post(f"{a.url}/v2/outage/blobs/uploads/")
        path = r.headers["Location"]
        r = http.patch(a.url + path, content=first, headers={"Content-Range": f"0-{len(first) - 1}"})
        assert r.status_code == 202 and r.headers["Range"] == f"0-{len(first) - 1}"

        stop_s3(s3)
        try:
            started = time.monotonic()
            assert_unavailable(http.patch(b.url + path, content=second), "PATCH while S3 is down")
            assert time.monotonic() - started < 30, "the 503 took too long"
            assert_unavailable(http.put(a.url + path, params={"digest": digest}), "PUT while S3 is down")
            assert_unavailable(http.get(f"{b.url}/v2/outage/blobs/{sha256_of(earlier)}"), "GET blob while S3 is down")
            assert_unavailable(http.head(f"{b.url}/v2/outage/manifests/latest"), "HEAD manifest while S3 is down")
            assert_unavailable(http.get(f"{a.url}/healthz"), "healthz while S3 is down")
            assert http.get(f"{a.url}/v2/").status_code == 200  # the process itself is fine
            failed = skopeo.copy(f"oci:{layout}:v1", f"docker://{a.hostport}/outage/app:v1", check=False)
            assert failed.returncode != 0
            assert "503" in failed.stderr or "unavailable" in failed.stderr.lower(), failed.stderr[-2000:]
        finally:
            restart_s3(s3)

        # Recovery by itself: no restart of the replicas.
        for replica in pair:
            wait_for(lambda replica=replica: http.get(f"{replica.url}/healthz").status_code == 200, 30,
                     what="healthz to recover")
        status = http.get(b.url + path)
        assert status.status_code == 204, (status.text, logs(pair))
        assert status.headers["Range"] == f"0-{len(first) - 1}"  # the failed PATCH left nothing half-applied
        assert http.head(f"{a.url}/v2/outage/blobs/{digest}").status_code == 404  # the failed PUT made nothing visible
        r = http.patch(b.url + path, content=second, headers={"Content-Range": f"{len(first)}-{len(data) - 1}"})
        assert r.status_code == 202, (r.text, logs(pair))
        r = http.put(a.url + r.headers["Location"], params={"digest": digest})
        assert r.status_code == 201, (r.text, logs(pair))
        for replica in pair:
            assert get_blob(replica.url, "outage", digest) == data
            assert get_blob(replica.url, "outage", sha256_of(earlier)) == earlier

    # The client's retry after the outage succeeds.
    skopeo.copy(f"oci:{layout}:v1", f"docker://{a.hostport}/outage/app:v1", "--preserve-digests")
    pushed = verify_pushed_image(b.url, "outage/app", "v1")
    assert sha256_of(pushed.raw) == image.digest


def test_a_write_cut_off_by_s3_is_not_half_kept(s3: S3Server) -> None:
    """The S3 writer under the upload store: S3 goes away while a PATCH's bytes fill a part and is
    back when the handler closes the session. Exactly the bytes written before the failure are
    kept, the status agrees with them, and the upload resumes from there to the right digest."""
    from ocispec.digest import Digest
    from storage.driver.s3 import S3Driver
    from storage.errors import StorageUnavailable
    from storage.repository import Storage

    storage = Storage(S3Driver(**s3.driver_options(s3.create_bucket(), part_size=5 * MiB, max_attempts=2)))
    data = random.Random(9).randbytes(12 * MiB)
    upload = storage.uploads.start("cut")
    session = storage.uploads.open_session("cut", upload.id, 0)
    session.write(data[:6 * MiB])  # part 1 is in S3, 1 MiB waits in the buffer
    stop_s3(s3)
    try:
        written = 6 * MiB
        with pytest.raises(StorageUnavailable):
            for start in range(6 * MiB, 11 * MiB, MiB):  # the write that fills part 2 fails
                session.write(data[start:start + MiB])
                written += MiB
    finally:
        restart_s3(s3)
    assert session.close() == written == storage.uploads.status("cut", upload.id).size
    session = storage.uploads.open_session("cut", upload.id, written)
    session.write(data[written:])
    session.close()
    info = storage.uploads.complete("cut", upload.id, Digest.parse(sha256_of(data)))
    assert info.size == len(data)
