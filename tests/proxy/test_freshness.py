"""Tags, digests and the upstream's health: by digest the cache never asks again; by tag it trusts
its answer for tag_ttl, then asks with one HEAD (a GET only when the tag moved); with the upstream
down what it has still pulls, and what it lacks is a clear 503."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.puller.conftest import FAST_NETWORK, PullerRunner, verify_store
from tests.support import images as im
from tests.support.faultproxy import Proxy
from tests.support.images import push_image
from tests.support.s3replicas import wait_for
from tests.support.servers import RunningServer, start_distribution

from .conftest import (
    Caches,
    assert_same_image,
    error_of,
    get_blob,
    get_manifest,
    manifest_digest,
    pull,
    requests_for,
    upstream_entry,
)


def tags(base_url: str, repo: str) -> list[str]:
    r = httpx.get(f"{base_url}/v2/{repo}/tags/list", timeout=30)
    assert r.status_code == 200, r.text
    return sorted(r.json()["tags"])


def stale_warnings(cache: RunningServer) -> list[str]:
    return [line for line in cache.log().splitlines() if " WARNING " in line and "stale" in line.lower()]


def test_with_the_upstream_stopped_cached_tags_and_digests_still_pull(
        tmp_path: Path, make_cache: Caches, puller: PullerRunner, name: str) -> None:
    own = start_distribution(tmp_path / "upstream")  # this test stops it
    try:
        image, other = im.simple_image(name), im.simple_image(name + "-8")
        uncached = im.simple_image(name + "-uncached")
        with httpx.Client(timeout=30) as http:
            push_image(http, own.url, f"library/{name}", image, "7")
            push_image(http, own.url, f"library/{name}", other, "8")
            push_image(http, own.url, f"library/{name}-x", uncached, "1")
        cache = make_cache([upstream_entry("docker.io", own.url, tag_ttl="1s")], retries=1)
        repo = f"docker.io/library/{name}"
        assert_same_image(pull(cache.url, repo, "7"), image)
        assert tags(cache.url, repo) == ["7", "8"]  # the upstream's list while it answers
    finally:
        own.stop()

    # Past tag_ttl the cache asks the stopped upstream, gets no answer and serves what it has.
    wait_for(lambda: manifest_digest(cache.url, repo, "7") == image.digest and stale_warnings(cache),
             timeout=20, what="a stale answer for the tag, logged as a WARNING")
    assert_same_image(pull(cache.url, repo, image.digest), image)
    assert manifest_digest(cache.url, f"library/{name}", "7", params={"ns": "docker.io"}) == image.digest
    assert tags(cache.url, repo) == ["7"]  # the cached tags
    puller.write_config(FAST_NETWORK + f'[hosts."docker.io"]\nmirrors = ["{cache.url}"]\nfallback = false\n')
    puller.ok("fetch", f"{name}:7")
    assert [m["digest"] for m in verify_store(puller.store)["manifests"]] == [image.digest]

    # What was never fetched cannot be served: a clear 503, never a 500 or a hang.
    error_of(get_manifest(cache.url, repo, "8"), 503, "UNAVAILABLE")
    error_of(get_manifest(cache.url, f"docker.io/library/{name}-x", "1"), 503, "UNAVAILABLE")
    error_of(httpx.get(f"{cache.url}/v2/{repo}/blobs/{other.layers[0].digest}", timeout=30), 503, "UNAVAILABLE")
    assert "Traceback" not in cache.log()


def test_what_the_upstream_does_not_have_is_unknown(recorder: Proxy, make_cache: Caches, upstream: RunningServer,
                                                    name: str) -> None:
    image = im.simple_image(name)
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "7")
    cache = make_cache([upstream_entry("docker.io", recorder.url)])
    repo = f"docker.io/library/{name}"
    error_of(get_manifest(cache.url, repo, "no-such-tag"), 404, "MANIFEST_UNKNOWN")
    error_of(get_manifest(cache.url, repo, "sha256:" + "0" * 64), 404, "MANIFEST_UNKNOWN")
    error_of(httpx.get(f"{cache.url}/v2/{repo}/blobs/sha256:{'1' * 64}", timeout=30), 404, "BLOB_UNKNOWN")
    assert manifest_digest(cache.url, repo, "7") == image.digest  # the upstream is fine


def test_a_tag_moved_upstream_is_seen_after_tag_ttl_and_not_before(
        upstream: RunningServer, recorder: Proxy, make_cache: Caches, name: str) -> None:
    old, new = im.simple_image(name + "-old"), im.simple_image(name + "-new")
    # Two names for the same upstream: docker.io trusts a tag for an hour, quay.io for a second.
    cache = make_cache([upstream_entry("docker.io", recorder.url, tag_ttl="1h"),
                        upstream_entry("quay.io", recorder.url, tag_ttl="1s")])
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", old, "7")
        long_ttl, short_ttl = f"docker.io/library/{name}", f"quay.io/library/{name}"
        assert manifest_digest(cache.url, long_ttl, "7") == old.digest
        assert manifest_digest(cache.url, short_ttl, "7") == old.digest
        push_image(http, upstream.url, f"library/{name}", new, "7")
    recorder.clear()

    assert manifest_digest(cache.url, long_ttl, "7") == old.digest  # within tag_ttl: the cached answer
    assert not requests_for(recorder, f"library/{name}", kind="manifests")
    wait_for(lambda: manifest_digest(cache.url, short_ttl, "7") == new.digest, timeout=20,
             what="the moved tag after tag_ttl")
    assert_same_image(pull(cache.url, short_ttl, "7"), new)
    assert manifest_digest(cache.url, short_ttl, old.digest) == old.digest  # by digest: still there
    assert manifest_digest(cache.url, long_ttl, "7") == old.digest


def test_an_unchanged_tag_costs_one_head_and_a_digest_or_a_range_nothing(
        upstream: RunningServer, recorder: Proxy, make_cache: Caches, name: str) -> None:
    image = im.simple_image(name)
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "7")
    cache = make_cache([upstream_entry("docker.io", recorder.url, tag_ttl="1s")])
    repo = f"docker.io/library/{name}"
    assert_same_image(pull(cache.url, repo, "7"), image)

    # By digest: the manifest and its blobs never need the upstream again.
    recorder.clear()
    for _ in range(3):
        assert_same_image(pull(cache.url, repo, image.digest), image)
        get_blob(cache.url, repo, image.layers[0].digest)
    layer = image.layers[0]
    ranged = httpx.get(f"{cache.url}/v2/{repo}/blobs/{layer.digest}", headers={"Range": "bytes=10-99"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == layer.data[10:100], ranged.status_code
    assert not recorder.requests

    # By tag past tag_ttl: a HEAD, and no GET, since the digest did not change (Docker Hub counts GETs).
    wait_for(lambda: manifest_digest(cache.url, repo, "7") == image.digest
             and requests_for(recorder, f"library/{name}", "HEAD", "manifests/7"),
             timeout=20, what="a HEAD of the tag upstream after tag_ttl")
    assert not [r for r in recorder.requests if r.method == "GET"], [(r.method, r.path) for r in recorder.requests]
