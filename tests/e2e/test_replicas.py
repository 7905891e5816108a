"""Stateless replicas: three `registry serve` processes over one SeaweedFS bucket used as one registry.

skopeo pushes through replica A and podman pulls through replica B; one upload is started on A,
continued on B and finished on C; 50 concurrent pushes of overlapping images (shared layers, shared
tags) through two replicas leave a store in which every manifest and blob verifies by digest and
every tag names one of the manifests pushed to it, the same on both replicas.

Replicas use the smallest S3 part size (5 MiB), so blobs of a few MiB exercise multipart uploads,
sidecar state handed between processes and multipart copies into the CAS.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.images import (
    OCI_MANIFEST,
    Blob,
    Entry,
    Image,
    build_image,
    make_layer,
    simple_image,
    write_oci_layout,
)
from tests.support.s3replicas import MiB, RecordingProxy, logs, start_replicas, stop_all
from tests.support.s3servers import S3Server
from tests.support.servers import RunningServer

from .clients import (
    Engine,
    Skopeo,
    engine_image,
    get_blob,
    get_manifest,
    read_mounted_file,
    sha256_of,
    verify_pushed_image,
)
from .conftest_s3 import s3_bucket, seaweedfs  # noqa: F401 - fixtures

S3_OPTIONS = {"part_size": 5 * MiB, "multipart_copy_threshold": 8 * MiB, "multipart_copy_part_size": 5 * MiB}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, seaweedfs: S3Server, s3_bucket: str  # noqa: F811
             ) -> Iterator[list[RunningServer]]:
    servers = start_replicas(tmp_path_factory.mktemp("replicas"), seaweedfs, s3_bucket, 3, **S3_OPTIONS)
    yield servers
    stop_all(servers)


def noise(seed: str, size: int) -> bytes:
    """Deterministic incompressible bytes."""
    return random.Random(seed).randbytes(size)


def big_image(seed: str) -> Image:
    """An image whose first layer (6 MiB of noise, gzip cannot shrink it) spans two S3 parts."""
    big = make_layer([Entry("data", "dir", mode=0o755), (f"data/{seed}.bin", noise(seed, 6 * MiB))])
    small = make_layer([(f"etc/{seed}", seed.encode())])
    return build_image([big, small])


# -- one image, pushed through A, pulled through B ----------------------------------------------------
def test_skopeo_pushes_through_a_and_podman_pulls_through_b(replicas: list[RunningServer], skopeo: Skopeo,
                                                            make_podman: Callable[[str], Engine],
                                                            tmp_path: Path) -> None:
    a, b, c = replicas
    image = big_image("replicas-ab")
    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    skopeo.copy(f"oci:{layout}:v1", f"docker://{a.hostport}/team/app:v1")

    # What A wrote, B and C serve at once (no cache to warm, no state to share but the bucket).
    for replica in (b, c):
        assert get_manifest(replica.url, "team/app", "v1").digest_header == image.digest
        assert httpx.get(f"{replica.url}/v2/team/app/tags/list").json()["tags"] == ["v1"]
        assert "team/app" in httpx.get(f"{replica.url}/v2/_catalog").json()["repositories"]
    pushed = verify_pushed_image(c.url, "team/app", "v1")
    assert [sha256_of(t) for t in pushed.layers] == [layer.diff_id for layer in image.layers]

    # podman reaches B through a recording proxy, so the test sees for itself which requests B answered.
    front_of_b = RecordingProxy(b.url)
    try:
        ref = f"127.0.0.1:{front_of_b.port}/team/app:v1"
        podman = make_podman("puller")
        podman("pull", "--tls-verify=false", ref)
        pulled = engine_image(podman, ref)
        assert "sha256:" + pulled["Id"] == image.config.digest
        assert pulled["Digest"] == image.digest
        assert read_mounted_file(podman, ref, "data/replicas-ab.bin") == noise("replicas-ab", 6 * MiB)
        served = {(seen.method, seen.path): seen.status for seen in front_of_b.seen}
        for layer in image.layers:  # every layer's bytes came from B itself, not a redirect
            assert served.get(("GET", f"/v2/team/app/blobs/{layer.digest}")) == 200, served
    finally:
        front_of_b.close()


# -- one upload over three replicas -----------------------------------------------------------------
def test_upload_started_on_a_continued_on_b_finished_on_c(replicas: list[RunningServer]) -> None:
    a, b, c = replicas
    data = noise("split", 12 * MiB + 12345)
    digest = sha256_of(data)
    pieces = [(0, 3 * MiB), (3 * MiB, 7 * MiB), (7 * MiB, len(data))]  # 3 MiB: below S3's minimum part
    with httpx.Client(timeout=60) as http:
        r = http.post(f"{a.url}/v2/split/blobs/uploads/")
        assert r.status_code == 202, r.text
        path = r.headers["Location"]
        for replica, (start, end) in zip((b, c), pieces[:2], strict=True):
            r = http.patch(replica.url + path, content=data[start:end],
                           headers={"Content-Range": f"{start}-{end - 1}", "Content-Type": "application/octet-stream"})
            assert r.status_code == 202, (replica.hostport, r.text, logs(replicas))
            assert r.headers["Range"] == f"0-{end - 1}"
            path = r.headers["Location"]
        # Any replica reports the same progress.
        for replica in replicas:
            status = http.get(replica.url + path)
            assert status.status_code == 204 and status.headers["Range"] == f"0-{7 * MiB - 1}"
        # A chunk at the wrong offset is refused by whichever replica gets it, with the real offset.
        wrong = http.patch(a.url + path, content=b"x", headers={"Content-Range": f"{3 * MiB}-{3 * MiB}"})
        assert wrong.status_code == 416 and wrong.headers["Range"] == f"0-{7 * MiB - 1}"
        start, end = pieces[2]
        r = http.put(c.url + path, params={"digest": digest}, content=data[start:end],
                     headers={"Content-Range": f"{start}-{end - 1}", "Content-Type": "application/octet-stream"})
        assert r.status_code == 201, (r.text, logs(replicas))
        assert r.headers["Docker-Content-Digest"] == digest
        for replica in replicas:
            assert get_blob(replica.url, "split", digest) == data
            ranged = http.get(f"{replica.url}/v2/split/blobs/{digest}", headers={"Range": "bytes=5242870-5242889"})
            assert ranged.status_code == 206 and ranged.content == data[5242870:5242890]
        assert http.get(a.url + path).status_code == 404  # the upload is gone everywhere

        # The same split with a wrong digest leaves nothing visible, on any replica.
        r = http.post(f"{b.url}/v2/split/blobs/uploads/")
        path = r.headers["Location"]
        assert http.patch(a.url + path, content=data[:6 * MiB]).status_code == 202
        bogus = sha256_of(b"not this")
        r = http.put(c.url + path, params={"digest": bogus})
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
        for replica in replicas:
            assert http.head(f"{replica.url}/v2/split/blobs/{bogus}").status_code == 404


# -- 50 concurrent pushes -----------------------------------------------------------------------------
PUSHES = 50
REPOS = [f"fleet/app{i}" for i in range(5)]


def fleet_layers() -> tuple[Blob, list[Blob]]:
    """The base every image shares, and 5 middle layers (10 images each); the first middle layer
    is 6 MiB of noise, so ten concurrent pushes of it race with multipart uploads."""
    shared = make_layer([("base/os-release", noise("fleet-base", 256 * 1024))])
    middles = [make_layer([("mid/0.bin", noise("fleet-mid-0", 6 * MiB))])]
    middles += [simple_image(f"fleet-mid-{m}", layer_count=1, layer_size=64 * 1024).layers[0] for m in range(1, 5)]
    return shared, middles


def fleet_image(i: int, shared: Blob, middles: list[Blob]) -> Image:
    """Image i: the shared base, middle layer i % 5 and a layer of its own; images 2k and 2k+1
    are the same image (pushed twice, through both replicas)."""
    own = make_layer([(f"own/{i // 2}", f"image {i // 2}".encode() * 100)])
    return build_image([shared, middles[(i // 2) % 5], own], config_extra={"author": f"fleet {i // 2}"})


def push_one(base_url: str, other_url: str, repo: str, tag: str, image: Image, chunked: bool, gate: threading.Barrier
             ) -> str:
    """What a client does: HEAD each blob, upload the missing ones (monolithic, or POST here + PATCH
    there + PUT here for `chunked`), then PUT the manifest by tag. Returns the manifest digest."""
    with httpx.Client(timeout=120) as http:
        gate.wait()
        for blob in image.blobs():
            if http.head(f"{base_url}/v2/{repo}/blobs/{blob.digest}").status_code == 200:
                continue
            if not chunked:
                r = http.post(f"{base_url}/v2/{repo}/blobs/uploads/", params={"digest": blob.digest}, content=blob.data)
            else:
                r = http.post(f"{base_url}/v2/{repo}/blobs/uploads/")
                assert r.status_code == 202, r.text
                r = http.patch(other_url + r.headers["Location"], content=blob.data)
                assert r.status_code == 202, r.text
                r = http.put(base_url + r.headers["Location"], params={"digest": blob.digest})
            assert r.status_code == 201, (repo, blob.digest, r.status_code, r.text)
        r = http.put(f"{base_url}/v2/{repo}/manifests/{tag}", content=image.manifest,
                     headers={"Content-Type": image.media_type})
        assert r.status_code == 201, (repo, tag, r.text)
        assert r.headers["Docker-Content-Digest"] == image.digest
        return image.digest


def test_fifty_concurrent_pushes_through_two_replicas_verify(replicas: list[RunningServer]) -> None:
    a, b = replicas[0], replicas[1]
    shared, middles = fleet_layers()
    jobs = []
    for i in range(PUSHES):
        image = fleet_image(i, shared, middles)
        repo, tag = REPOS[i % 5], f"t{(i // 2) % 4}"  # several images race for each tag
        via, other = (a, b) if i % 2 == 0 else (b, a)
        jobs.append((via.url, other.url, repo, tag, image, i % 4 >= 2))  # half of them chunked
    gate = threading.Barrier(PUSHES)
    with ThreadPoolExecutor(PUSHES) as pool:
        futures = [pool.submit(push_one, *job, gate) for job in jobs]
        errors = [f.exception() for f in futures if f.exception() is not None]
    assert not errors, f"{len(errors)} pushes failed, first: {errors[0]!r}\n{logs([a, b])}"

    pushed_to: dict[tuple[str, str], set[str]] = {}
    for _, _, repo, tag, image, _ in jobs:
        pushed_to.setdefault((repo, tag), set()).add(image.digest)
    # Every manifest through both replicas; each blob of each repository once (get_blob checks the
    # digest of what is served), alternating replicas.
    checks: list[tuple[Callable[..., None], str, str, Image | Blob]] = []
    blobs_seen: set[tuple[str, str]] = set()
    for n, (_, _, repo, _, image, _) in enumerate(jobs):
        checks += [(_check_manifest, replica.url, repo, image) for replica in (a, b)]
        for blob in image.blobs():
            if (repo, blob.digest) not in blobs_seen:
                blobs_seen.add((repo, blob.digest))
                checks.append((_check_blob, (a, b)[n % 2].url, repo, blob))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda check: check[0](*check[1:]), checks))
    # Every tag names one of the manifests pushed to it, and both replicas agree.
    http = _http()
    for (repo, tag), digests in pushed_to.items():
        seen = {http.get(f"{replica.url}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}
                         ).headers["Docker-Content-Digest"] for replica in (a, b)}
        assert len(seen) == 1 and seen <= digests, (repo, tag, seen, digests)
    for repo in REPOS:
        tags = {replica.hostport: http.get(f"{replica.url}/v2/{repo}/tags/list").json()["tags"] for replica in (a, b)}
        assert list(tags.values()) == [["t0", "t1", "t2", "t3"]] * 2, tags

    # No upload is left behind in the bucket: no upload state, no sidecar, no multipart upload.
    blob_keys, multipart = _bucket_keys(replicas)
    assert not multipart, multipart[:5]
    assert not [k for k in blob_keys if "/_uploads/" in k], [k for k in blob_keys if "/_uploads/" in k][:5]
    cas = {k.split("/")[-2] for k in blob_keys if k.startswith("v1/blobs/") and k.endswith("/data")}
    expected = {d.split(":")[1] for job in jobs for d in (job[4].digest, *(blob.digest for blob in job[4].blobs()))}
    assert expected <= cas


_local = threading.local()


def _http() -> httpx.Client:
    """One client per verifying thread (a new httpx client costs milliseconds of CPU)."""
    if not hasattr(_local, "client"):
        _local.client = httpx.Client(timeout=60)
    return _local.client


def _check_manifest(url: str, repo: str, image: Image) -> None:
    r = _http().get(f"{url}/v2/{repo}/manifests/{image.digest}", headers={"Accept": image.media_type})
    assert r.status_code == 200, (url, repo, image.digest, r.status_code, r.text)
    assert r.content == image.manifest and r.headers["Docker-Content-Digest"] == image.digest


def _check_blob(url: str, repo: str, blob: Blob) -> None:
    r = _http().get(f"{url}/v2/{repo}/blobs/{blob.digest}")
    assert r.status_code == 200, (url, repo, blob.digest, r.status_code, r.text)
    assert sha256_of(r.content) == blob.digest and r.content == blob.data


def _bucket_keys(replicas: list[RunningServer]) -> tuple[list[str], list[str]]:
    """Every object key in the replicas' bucket and the keys of unfinished multipart uploads, read
    with a plain boto3 client."""
    import boto3
    from botocore.config import Config

    config = _replica_s3(replicas[0])
    client = boto3.client("s3", endpoint_url=config["endpoint_url"], region_name=config["region"],
                          aws_access_key_id=config["access_key"],
                          aws_secret_access_key=replicas[0].env["CARGOBAY_STORAGE_S3_SECRET_KEY"],
                          config=Config(s3={"addressing_style": "path"}))
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=config["bucket"]):
        keys += [obj["Key"] for obj in page.get("Contents", ())]
    multipart = [u["Key"] for u in client.list_multipart_uploads(Bucket=config["bucket"]).get("Uploads", ())]
    return keys, multipart


def _replica_s3(replica: RunningServer) -> dict:
    import yaml

    (config_path,) = replica.log_path.parent.glob(f"config-{replica.port}.yaml")
    return yaml.safe_load(config_path.read_text())["storage"]["s3"]


def test_health_on_every_replica(replicas: list[RunningServer]) -> None:
    for replica in replicas:
        r = httpx.get(f"{replica.url}/healthz")
        assert r.status_code == 200 and r.json() == {"storage": "ok"}

