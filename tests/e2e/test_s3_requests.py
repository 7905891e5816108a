"""What users' operations cost in S3 requests (what a bill shows), on SeaweedFS behind a recording
proxy: a blob that arrives whole goes straight to its place in the CAS (one PUT, or a multipart
upload on its own key, never a copy, no upload state), an upload in PATCHes keeps everything it
needs to resume in its one state object (read once and written once a PATCH, no sidecar) and is
finished into the CAS from it without a second object, a missing key is one HEAD, and serving a
blob is its bytes once the replica saw its link (`storage.link_cache_seconds`), its link and its
bytes otherwise. The ceilings are today's counts: a change that costs a request
more fails here and has to say why. (bench/bench_s3_requests.py prints the same operations next to
Distribution's.)
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.images import Entry, Image, build_image, make_layer, push_image, write_oci_layout
from tests.support.s3replicas import MiB, RecordingProxy, Seen, s3_config, s3_env
from tests.support.s3servers import S3Server
from tests.support.servers import RunningServer, start_cargobay

from .clients import Skopeo
from .conftest_s3 import s3_bucket, seaweedfs  # noqa: F401 - fixtures

PART = 5 * MiB


@pytest.fixture(scope="module")
def proxy(seaweedfs: S3Server) -> Iterator[RecordingProxy]:  # noqa: F811
    recorder = RecordingProxy(seaweedfs.endpoint_url)
    yield recorder
    recorder.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, seaweedfs: S3Server, s3_bucket: str,  # noqa: F811
           proxy: RecordingProxy) -> Iterator[RunningServer]:
    config = s3_config(seaweedfs, s3_bucket, endpoint_url=proxy.url(), part_size=PART)
    config["storage"]["uploads"] = {"purge_interval": 0}  # no background requests between counts
    running = start_cargobay(tmp_path_factory.mktemp("s3-requests"), config=config, env=s3_env(seaweedfs))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory, seaweedfs: S3Server, s3_bucket: str,  # noqa: F811
            proxy: RecordingProxy) -> Iterator[RunningServer]:
    """Another replica over the same bucket, behind the same recording proxy."""
    config = s3_config(seaweedfs, s3_bucket, endpoint_url=proxy.url(), part_size=PART)
    config["storage"]["uploads"] = {"purge_interval": 0}
    running = start_cargobay(tmp_path_factory.mktemp("s3-requests-replica"), config=config, env=s3_env(seaweedfs))
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def cost(proxy: RecordingProxy, action: Callable[[], object]) -> list[Seen]:
    proxy.clear()
    action()
    return proxy.seen


def described(seen: list[Seen]) -> str:
    return "\n".join(f"{s.method} {s.path} {sorted(s.query)}" for s in seen)


def blob_key(digest: str) -> str:
    hex_ = digest.split(":")[1]
    return f"/v1/blobs/sha256/{hex_[:2]}/{hex_}/data"


def assert_straight_into_the_cas(seen: list[Seen], digest: str) -> None:
    """Nothing of an upload's machinery (state, sidecar, copy) and the bytes written once, at
    the blob's own key."""
    assert not [s for s in seen if "/_uploads/" in s.path], described(seen)
    assert not [s for s in seen if "x-amz-copy-source" in s.headers], described(seen)
    writes = [s for s in seen if s.method == "PUT" and "/v1/blobs/" in s.path]
    assert writes and all(s.path.endswith(blob_key(digest)) for s in writes), described(seen)


def test_a_small_monolithic_upload_is_one_put_into_the_cas(client: httpx.Client, proxy: RecordingProxy) -> None:
    data = random.Random(1).randbytes(1024)
    digest = sha256(data)
    seen = cost(proxy, lambda: client.post("/v2/costs/mono/blobs/uploads/", params={"digest": digest},
                                            content=data).raise_for_status())
    assert_straight_into_the_cas(seen, digest)
    assert len(seen) <= 4, described(seen)  # is it there, PUT it, its link, the sweep check
    assert not [s for s in seen if "uploadId" in s.query or "uploads" in s.query], described(seen)

    # POST, then PUT with the whole body: the upload had nothing, so the blob goes the same way.
    data = random.Random(2).randbytes(1024)
    digest = sha256(data)

    def post_then_put() -> None:
        location = client.post("/v2/costs/mono/blobs/uploads/").headers["Location"]
        client.put(location, params={"digest": digest}, content=data).raise_for_status()
    seen = cost(proxy, post_then_put)
    assert len(seen) <= 7, described(seen)  # the state; its first line, is it there, PUT it, link, sweeps, drop
    assert len([s for s in seen if s.path.endswith(blob_key(digest))]) == 2, described(seen)  # is it there, PUT
    assert not [s for s in seen if "x-amz-copy-source" in s.headers], described(seen)


def test_a_large_monolithic_upload_is_a_multipart_upload_on_its_own_key(client: httpx.Client,
                                                                        proxy: RecordingProxy) -> None:
    data = random.Random(3).randbytes(2 * PART + MiB)
    digest = sha256(data)
    seen = cost(proxy, lambda: client.post("/v2/costs/big/blobs/uploads/", params={"digest": digest},
                                            content=data).raise_for_status())
    assert_straight_into_the_cas(seen, digest)
    parts = [s for s in seen if s.method == "PUT" and "partNumber" in s.query]
    assert len(parts) == 3, described(seen)
    completed = [s for s in seen if s.method == "POST" and "uploadId" in s.query]
    assert len(completed) == 1 and completed[0].path.endswith(blob_key(digest))
    assert len(seen) <= 9, described(seen)  # create, 3 parts, complete, is it there, link, sweep check
    assert client.get(f"/v2/costs/big/blobs/{digest}").content == data


def what(seen: Seen) -> tuple[str, str]:
    """A request as (method, what it touched), for the sequences below."""
    prefix = seen.query.get("prefix", [""])[0]
    kind = ("upload state's first line" if seen.path.endswith("/startedat") and "range" in seen.headers
            else "upload state" if seen.path.endswith("/startedat") else "blob" if "/v1/blobs/" in seen.path
            else "link" if "/_layers/" in seen.path else "sweeps" if prefix.startswith("v1/gc/sweeps")
            else "batch delete" if seen.method == "POST" and seen.path.count("/") == 1 else seen.path)
    return seen.method, kind


def test_an_upload_in_a_patch_is_finished_into_the_cas_without_a_copy(client: httpx.Client,
                                                                      proxy: RecordingProxy) -> None:
    """What docker and containers/image do (POST, PATCH with the blob, PUT ?digest=): each step
    reads the upload's state once, a PATCH writes it once, with the bytes (under a part: no
    multipart upload), and no sidecar is ever read, written or deleted."""
    data = random.Random(4).randbytes(1024)
    digest = sha256(data)
    location = ""

    def step(request: Callable[[], httpx.Response]) -> list[tuple[str, str]]:
        seen = cost(proxy, lambda: location_of(request()))
        assert not [s for s in seen if ".cargobay-upload-" in s.path], described(seen)
        return [what(s) for s in seen]

    def location_of(response: httpx.Response) -> None:
        nonlocal location
        response.raise_for_status()
        location = response.headers.get("Location", location)

    assert step(lambda: client.post("/v2/costs/patched/blobs/uploads/")) == [("PUT", "upload state")]
    assert step(lambda: client.patch(location, content=data)) == [("GET", "upload state"), ("PUT", "upload state")]
    # Where it stands (what a client resuming asks) is the state's first line: a ranged GET, so
    # the bytes the state holds are never sent (and the connection goes back to the pool).
    assert step(lambda: client.get(location)) == [("GET", "upload state's first line")]
    assert step(lambda: client.put(location, params={"digest": digest})) == FINISHED
    assert client.get(f"/v2/costs/patched/blobs/{digest}").content == data


#: What the final PUT of an upload under a part costs: its state, is the blob there, the blob, its
#: link, the collection check, the state and the data key in one batch delete.
FINISHED = [("GET", "upload state"), ("HEAD", "blob"), ("PUT", "blob"), ("PUT", "link"), ("GET", "sweeps"),
            ("POST", "batch delete")]


def test_an_upload_patched_on_one_replica_is_finished_alike_on_another(client: httpx.Client, replica: RunningServer,
                                                                        proxy: RecordingProxy) -> None:
    """The replica finishing it has no running hash of the bytes, but the state holds them all
    (under a part): it hashes those, with no object written at the data key and read back."""
    data = random.Random(6).randbytes(4096)
    digest = sha256(data)
    location = client.post("/v2/costs/handed-on/blobs/uploads/").headers["Location"]
    client.patch(location, content=data).raise_for_status()
    refused = httpx.put(f"{replica.url}{location}", params={"digest": sha256(b"other")})
    assert refused.status_code == 400 and refused.json()["errors"][0]["code"] == "DIGEST_INVALID", refused.text
    assert httpx.head(f"{replica.url}/v2/costs/handed-on/blobs/{sha256(b'other')}").status_code == 404
    assert httpx.head(f"{replica.url}/v2/costs/handed-on/blobs/{digest}").status_code == 404  # nothing finished
    location = client.post("/v2/costs/handed-on/blobs/uploads/").headers["Location"]
    client.patch(location, content=data).raise_for_status()
    seen = cost(proxy, lambda: httpx.put(f"{replica.url}{location}", params={"digest": digest}).raise_for_status())
    assert [what(s) for s in seen] == FINISHED, described(seen)
    assert httpx.get(f"{replica.url}/v2/costs/handed-on/blobs/{digest}").content == data


def test_serving_a_blob_is_its_bytes_once_its_link_was_seen(client: httpx.Client, replica: RunningServer,
                                                             proxy: RecordingProxy) -> None:
    data = random.Random(5).randbytes(3 * 1024)
    digest = sha256(data)
    client.post("/v2/costs/served/blobs/uploads/", params={"digest": digest}, content=data).raise_for_status()
    # This replica wrote the link: the bytes alone (their size comes with them).
    seen = cost(proxy, lambda: client.get(f"/v2/costs/served/blobs/{digest}").raise_for_status())
    assert [(s.method, s.path.endswith(blob_key(digest))) for s in seen] == [("GET", True)], described(seen)
    # A HEAD (what push clients ask before uploading) looks at the link whatever was seen.
    seen = cost(proxy, lambda: client.head(f"/v2/costs/served/blobs/{digest}").raise_for_status())
    assert [(s.method, s.path.endswith(blob_key(digest))) for s in seen] == [("HEAD", False), ("HEAD", True)], \
        described(seen)
    # A replica that never saw the link checks it first, then remembers it.
    for expected in ([("HEAD", False), ("GET", True)], [("GET", True)]):
        seen = cost(proxy, lambda: httpx.get(f"{replica.url}/v2/costs/served/blobs/{digest}").raise_for_status())
        assert [(s.method, s.path.endswith(blob_key(digest))) for s in seen] == expected, described(seen)
    # A blob the repository does not have: one HEAD of its link, nothing else.
    absent = sha256(b"absent")
    seen = cost(proxy, lambda: client.head(f"/v2/costs/served/blobs/{absent}"))
    assert [s.method for s in seen] == ["HEAD"], described(seen)


def four_layer_image() -> Image:
    rng = random.Random(7)
    return build_image([make_layer([Entry("data", "dir", mode=0o755), (f"data/{i}.bin", rng.randbytes(size))])
                        for i, size in enumerate((1024, 100 * 1024, 2 * MiB, 6 * MiB))])


def test_pushing_and_pulling_a_small_image(server: RunningServer, client: httpx.Client, proxy: RecordingProxy,
                                          skopeo: Skopeo, tmp_path: Path) -> None:
    """skopeo's push of a 4-layer image and its pull (Distribution 2.8 on the same SeaweedFS: 154
    and 44 requests; bench/bench_s3_requests.py)."""
    image = four_layer_image()
    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    ref = f"docker://{server.hostport}/costs/image:v1"
    pushed = cost(proxy, lambda: skopeo.copy(f"oci:{layout}:v1", ref))
    # 77 today (skopeo may ask once more): 73 with the default part size (bench/bench_s3_requests.py),
    # where the 6 MiB layer is under a part and needs no multipart upload, completion and copy.
    assert len(ours(pushed)) <= 78, described(pushed)
    pulled = cost(proxy, lambda: skopeo.copy(ref, f"dir:{tmp_path / 'pulled'}"))
    # The tag, the manifest's bytes and type, then each blob's bytes: the links were written by
    # this replica, so it believes them (`storage.link_cache_seconds`), and a blob's size comes
    # with its bytes, no HEAD of them. Distribution with its cache: 9.
    blobs = [blob_key(b.digest) for b in (image.config, *image.layers)]
    assert len(pulled) <= 3 + len(blobs), described(pulled)
    assert Counter((s.method, key) for s in pulled for key in blobs if s.path.endswith(key)) == Counter(
        ("GET", key) for key in blobs), described(pulled)
    # The same image pushed by plain HTTP (POST ?digest= per blob): fewer still.
    pushed = cost(proxy, lambda: push_image(client, server.url, "costs/plain", image, "v1"))
    assert len(ours(pushed)) <= 36, described(pushed)


def ours(seen: list[Seen]) -> list[Seen]:
    """The requests of blobs, manifests, links and uploads: the catalog and tag indexes
    (`v1/index/`) are counted by their own tests."""
    return [s for s in seen if "/v1/index/" not in s.path]
