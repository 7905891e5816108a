"""A lying upstream: the fault proxy in front of it corrupts, truncates or stalls a blob, or serves
a manifest that is not the digest asked for. The client gets an error (never a complete wrong
blob), nothing wrong is stored, and once the upstream heals the same request succeeds."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from tests.support import images as im
from tests.support.faultproxy import Proxy
from tests.support.images import push_image
from tests.support.s3replicas import wait_for
from tests.support.servers import RunningServer

from .conftest import (
    Caches,
    assert_cas_sound,
    assert_same_image,
    cas_data,
    get_blob,
    get_manifest,
    layer_link,
    pull,
    revision_link,
    sha256,
    upstream_entry,
)

LAYER_SIZE = 256 * 1024


def random_image(seed: str) -> im.Image:
    """An image whose layer does not compress: the cache must stream it in many chunks."""
    layer = im.make_layer([(f"{seed}.bin", os.urandom(LAYER_SIZE))], compression="")
    return im.build_image([layer])


def blob_outcome(url: str) -> str:
    """How a client's GET of a blob ended: "refused" (an error status), "cut" (the connection
    ended before the declared length), "hung" (nothing more came for 10 s, far past the cache's
    read_timeout) or "complete: <digest>" (a whole body was delivered)."""
    with httpx.Client(timeout=10) as client, client.stream("GET", url) as r:
        if r.status_code != 200:
            return "refused"
        try:
            body = r.read()
        except httpx.TimeoutException:
            return "hung"
        except httpx.HTTPError:
            return "cut"
        declared = r.headers.get("content-length")
        if declared is not None and int(declared) != len(body):
            return "cut"
        return f"complete: {sha256(body)}"


@pytest.mark.parametrize("fault", [
    {"action": "corrupt"},                                  # every byte arrives, one of them wrong
    {"action": "truncate", "keep": LAYER_SIZE // 2},        # the connection closes half way
    {"action": "stall", "keep": LAYER_SIZE // 2, "delay": 8.0},  # half, then silence past read_timeout
], ids=lambda fault: fault["action"])
def test_a_bad_blob_is_never_served_whole_nor_stored_and_a_retry_after_healing_works(
        upstream: RunningServer, recorder: Proxy, make_cache: Caches, name: str, fault: dict[str, object]) -> None:
    image = random_image(name)
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "7")
    cache = make_cache([upstream_entry("docker.io", recorder.url)], read_timeout="1s", retries=1)
    repo = f"docker.io/library/{name}"
    assert cache.root is not None
    layer = image.layers[0]
    get_manifest(cache.url, repo, "7").raise_for_status()

    recorder.add_fault(path=f"/blobs/{layer.digest}", method="GET", times=-1, **fault)
    url = f"{cache.url}/v2/{repo}/blobs/{layer.digest}"
    for _attempt in range(2):  # the second attempt finds nothing stored by the first: it fails the same way
        outcome = blob_outcome(url)
        assert outcome in ("refused", "cut"), f"the client got a whole blob from a lying upstream: {outcome}"
        assert not layer_link(cache.root, repo, layer.digest).exists()
        assert not cas_data(cache.root, layer.digest).exists()
        assert_cas_sound(cache.root)
    assert "Traceback" not in cache.log()

    recorder.faults.clear()  # the upstream heals
    assert blob_outcome(url) == f"complete: {layer.digest}"
    # The client completes once the bytes verified; the durable commit follows at once.
    wait_for(lambda: layer_link(cache.root, repo, layer.digest).exists(), 30, what="the healed blob to be stored")
    assert cas_data(cache.root, layer.digest).read_bytes() == layer.data
    assert_same_image(pull(cache.url, repo, "7"), image)


def test_a_manifest_that_is_not_the_digest_asked_for_is_refused_and_not_stored(
        upstream: RunningServer, recorder: Proxy, make_cache: Caches, name: str) -> None:
    image = im.simple_image(name)
    impostor = im.simple_image(name + "-impostor")
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "7")
    cache = make_cache([upstream_entry("docker.io", recorder.url)], retries=0)
    repo = f"docker.io/library/{name}"
    assert cache.root is not None

    # A valid manifest, only not the one asked for.
    recorder.add_fault(action="body", path=f"/manifests/{image.digest}", times=-1, body=impostor.manifest)
    for _attempt in range(2):
        r = get_manifest(cache.url, repo, image.digest)
        assert r.status_code >= 400 and r.status_code != 500, (r.status_code, r.text[:300])
        assert r.headers.get("content-type", "").startswith("application/json") and r.json()["errors"], r.text
        assert not revision_link(cache.root, repo, image.digest).exists()
        assert not revision_link(cache.root, repo, impostor.digest).exists()

    recorder.faults.clear()
    assert_same_image(pull(cache.url, repo, image.digest), image)
    get_blob(cache.url, repo, image.config.digest)


def test_a_manifest_that_lies_about_a_cached_blobs_size_is_refused_as_the_upstreams_fault(
        upstream: RunningServer, recorder: Proxy, make_cache: Caches, name: str) -> None:
    image = im.simple_image(name)
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "7")
    cache = make_cache([upstream_entry("docker.io", recorder.url)], retries=0)
    repo = f"docker.io/library/{name}"
    assert_same_image(pull(cache.url, repo, "7"), image)  # the layer is cached now, with its true size

    manifest = json.loads(image.manifest)
    manifest["layers"][0]["size"] += 1  # a manifest of the upstream that disagrees with the verified blob
    recorder.add_fault(action="body", path="/manifests/evil", times=-1, body=json.dumps(manifest).encode())
    r = get_manifest(cache.url, repo, "evil")
    assert r.status_code == 502, (r.status_code, r.text[:300])
    assert r.json()["errors"][0]["code"] == "MANIFEST_INVALID"
    assert "upstream docker.io" in r.json()["errors"][0]["message"]
    assert "Traceback" not in cache.log()
