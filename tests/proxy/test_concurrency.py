"""One upstream fetch per blob: 8 clients pulling the same uncached image at once through one
replica make it GET each blob (and the manifest) upstream once, counted by the proxy in front of
the upstream; a second replica over the same SeaweedFS bucket then serves the image, and another
repository with the same blobs, without fetching any blob again. (Distribution's proxy mode GETs
one blob up to 20 times in the same race.)"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support import images as im
from tests.support.faultproxy import Proxy
from tests.support.images import push_image
from tests.support.s3replicas import logs, start_replicas, stop_all
from tests.support.s3servers import S3Server, serving, start_seaweedfs
from tests.support.servers import RunningServer

from .conftest import Pulled, assert_same_image, blob_gets, pull, requests_for, upstream_entry

CLIENTS = 8


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    yield from serving(start_seaweedfs(tmp_path_factory.mktemp("proxy-seaweedfs")))


def test_concurrent_cold_pulls_fetch_each_blob_once_and_another_replica_fetches_none(
        upstream: RunningServer, recorder: Proxy, s3: S3Server, tmp_path: Path, name: str) -> None:
    big = im.make_layer([(f"{name}/big.bin", os.urandom(1024 * 1024))], compression="")
    small = im.make_layer([(f"{name}/small.bin", os.urandom(64 * 1024))], compression="")
    image = im.build_image([big, small])
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "7")
        push_image(http, upstream.url, f"library/{name}-twin", image, "7")  # same blobs, another repository
    # The big layer comes slowly, so that every client asks for it while the first fetch is running.
    recorder.add_fault(action="slow", path=f"/blobs/{big.digest}", method="GET", times=-1, delay=0.03)
    proxy = {"upstreams": [upstream_entry("docker.io", recorder.url)], "read_timeout": "10s"}
    replicas = start_replicas(tmp_path, s3, s3.create_bucket(), 2, config={"proxy": proxy})
    first, second = replicas
    repo = f"docker.io/library/{name}"
    try:
        barrier = threading.Barrier(CLIENTS)

        def one_client() -> Pulled:
            barrier.wait(timeout=30)
            return pull(first.url, repo, "7")

        with ThreadPoolExecutor(CLIENTS) as pool:
            pulls = [future.result() for future in [pool.submit(one_client) for _ in range(CLIENTS)]]
        for pulled in pulls:
            assert_same_image(pulled, image)
        assert Counter(blob_gets(recorder, f"library/{name}")) == {b.digest: 1 for b in image.blobs()}, \
            logs(replicas)
        assert len(requests_for(recorder, f"library/{name}", "GET", "manifests")) == 1, \
            [(r.method, r.path) for r in recorder.requests]

        recorder.clear()
        assert_same_image(pull(second.url, repo, "7"), image)
        assert not requests_for(recorder, f"library/{name}", "GET"), [(r.method, r.path) for r in recorder.requests]
        # Another repository naming the same blobs: its manifest is fetched, its blobs are linked.
        assert_same_image(pull(second.url, f"docker.io/library/{name}-twin", "7"), image)
        assert not blob_gets(recorder, f"library/{name}-twin"), logs(replicas)
    finally:
        stop_all(replicas)
