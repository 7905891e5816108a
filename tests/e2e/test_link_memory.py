"""What a server on S3 remembers of links (`storage.link_cache_seconds`, docs/s3.md), as clients see
it: a delete through any worker of a server is seen at once by all of them; a blob HEAD (how push
clients decide whether to upload) always looks at the link, so a push after another replica's
delete uploads the blob again and succeeds."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ocispec import mediatypes as mt
from tests.support.s3replicas import s3_config, s3_env
from tests.support.s3servers import S3Server
from tests.support.servers import RunningServer, start_cargobay

from .conftest_s3 import s3_bucket, seaweedfs  # noqa: F401 - fixtures

#: Requests on fresh connections: enough that each of two workers very likely serves some (and remembers).
SPREAD = 12


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, seaweedfs: S3Server,  # noqa: F811
            s3_bucket: str) -> Iterator[tuple[RunningServer, RunningServer]]:  # noqa: F811
    config = s3_config(seaweedfs, s3_bucket)
    workdir = tmp_path_factory.mktemp("link-memory")
    two_workers = start_cargobay(workdir / "a", config=config, env=s3_env(seaweedfs), workers=2)
    other = start_cargobay(workdir / "b", config=config, env=s3_env(seaweedfs))
    yield two_workers, other
    two_workers.stop()
    other.stop()


def push_blob(url: str, repo: str, data: bytes) -> str:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    httpx.post(f"{url}/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data).raise_for_status()
    return digest


def statuses(method: str, url: str) -> list[int]:
    """`method url` SPREAD times, each on a new connection (so the kernel spreads them over workers)."""
    return [httpx.request(method, url).status_code for _ in range(SPREAD)]


def test_a_delete_through_one_worker_is_seen_by_every_worker(servers: tuple[RunningServer, RunningServer]) -> None:
    server, _ = servers
    data = random.Random(1).randbytes(2048)
    digest = push_blob(server.url, "memory/workers", data)
    blob = f"{server.url}/v2/memory/workers/blobs/{digest}"
    assert statuses("GET", blob) == [200] * SPREAD  # each worker has very likely seen the link
    assert httpx.delete(blob).status_code == 202
    assert statuses("GET", blob) == [404] * SPREAD
    assert statuses("HEAD", blob) == [404] * SPREAD


def test_a_push_after_another_replica_deleted_a_blob_uploads_it_again(
        servers: tuple[RunningServer, RunningServer]) -> None:
    server, other = servers
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}},
                        ).encode()
    digest = push_blob(server.url, "memory/replicas", config)
    blob = f"{server.url}/v2/memory/replicas/blobs/{digest}"
    assert httpx.get(blob).status_code == 200  # seen here
    assert httpx.delete(f"{other.url}/v2/memory/replicas/blobs/{digest}").status_code == 202
    # What a push client asks first: the link itself, not what this replica remembers.
    assert httpx.head(blob).status_code == 404
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "layers": [],
                           "config": {"mediaType": mt.OCI_CONFIG, "digest": digest, "size": len(config)}}).encode()
    put = httpx.put(f"{server.url}/v2/memory/replicas/manifests/v1", content=manifest,
                    headers={"Content-Type": mt.OCI_MANIFEST})
    assert put.status_code == 400 and put.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    # So the client uploads it again, and the push succeeds on either replica.
    push_blob(server.url, "memory/replicas", config)
    put = httpx.put(f"{server.url}/v2/memory/replicas/manifests/v1", content=manifest,
                    headers={"Content-Type": mt.OCI_MANIFEST})
    assert put.status_code == 201, put.text
    assert httpx.get(f"{other.url}/v2/memory/replicas/blobs/{digest}").content == config


def test_the_board_file_is_gone_when_the_server_stops(tmp_path: Path, seaweedfs: S3Server,  # noqa: F811
                                                      s3_bucket: str) -> None:  # noqa: F811
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = start_cargobay(tmp_path, config=s3_config(seaweedfs, s3_bucket),
                            env=s3_env(seaweedfs, TMPDIR=str(temp)), workers=2)
    boards = list(temp.glob("cargobay-links-*/board"))
    server.stop()
    assert len(boards) == 1 and not boards[0].parent.exists()
