"""The pull-through cache's metrics, per upstream host: a first pull misses (one upstream fetch per
thing), the next hits, and with the upstream failing past tag_ttl the cached answer is a stale one
and the failure an upstream error."""

from __future__ import annotations

import httpx

from tests.support import images as im
from tests.support.faultproxy import Proxy
from tests.support.images import push_image
from tests.support.metrics import scrape
from tests.support.s3replicas import wait_for
from tests.support.servers import RunningServer

from .conftest import Caches, assert_same_image, manifest_digest, pull, upstream_entry

LOOKUPS = "cargobay_proxy_lookups_total"


def test_hits_misses_stale_answers_and_upstream_errors(recorder: Proxy, make_cache: Caches, upstream: RunningServer,
                                                       name: str) -> None:
    image = im.simple_image(name)
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "1")
    cache = make_cache([upstream_entry("docker.io", recorder.url, tag_ttl="1s")], retries=0,
                       base={"metrics": {"anonymous": True}})
    repo = f"docker.io/library/{name}"
    blobs = len(image.blobs())

    assert_same_image(pull(cache.url, repo, "1"), image)
    assert_same_image(pull(cache.url, repo, image.digest), image)
    metrics = scrape(f"{cache.url}/metrics")
    assert metrics.total(LOOKUPS, upstream="docker.io", kind="manifest", result="miss") == 1
    assert metrics.total(LOOKUPS, upstream="docker.io", kind="manifest", result="hit") == 1
    assert metrics.total(LOOKUPS, upstream="docker.io", kind="blob", result="miss") == blobs
    assert metrics.total(LOOKUPS, upstream="docker.io", kind="blob", result="hit") == blobs
    assert metrics.total("cargobay_proxy_upstream_errors_total") == 0

    # The upstream fails: past tag_ttl the tag is answered from the cache, stale.
    recorder.add_fault(action="status", status=503, path="/manifests/", times=-1)
    wait_for(lambda: manifest_digest(cache.url, repo, "1") == image.digest
             and scrape(f"{cache.url}/metrics").total(LOOKUPS, kind="manifest", result="stale") >= 1,
             timeout=20, what="a stale answer past tag_ttl")
    metrics = scrape(f"{cache.url}/metrics")
    assert metrics.total("cargobay_proxy_upstream_errors_total", upstream="docker.io", kind="manifest") >= 1
    assert not [v for v in metrics.label_values() if name in v]  # no repository in any label
