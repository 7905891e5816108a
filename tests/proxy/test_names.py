"""Cached names beside local ones: writes into a cached upstream's names are refused with 405
UNSUPPORTED naming the upstream; pushes without a prefix are local and pull back; the routing rule
for names with neither ns nor prefix (local patterns, an existing local repository shadows the
default upstream, a prefix always reaches the cache); an upstream's `repositories` filter."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support import images as im
from tests.support.faultproxy import Proxy
from tests.support.images import push_blob, push_image
from tests.support.servers import RunningServer, serving, start_cargobay

from .conftest import (
    Caches,
    assert_same_image,
    cache_config,
    error_of,
    get_manifest,
    manifest_digest,
    pull,
    requests_for,
    upstream_entry,
)


@pytest.fixture
def cached(upstream: RunningServer, recorder: Proxy, make_cache: Caches, name: str) -> tuple[RunningServer, im.Image]:
    """A cache (default docker.io, `team-*/*` local) that has pulled docker.io/library/<name>:7."""
    image = im.simple_image(name)
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "7")
    cache = make_cache([upstream_entry("docker.io", recorder.url), upstream_entry("ghcr.io", recorder.url)],
                       default="docker.io", local=["team-*/*"])
    assert_same_image(pull(cache.url, f"docker.io/library/{name}", "7"), image)
    return cache, image


@dataclass
class Written:
    """The module's cache for the refused writes, the image it cached and its upstream's recorder."""

    cache: RunningServer
    image: im.Image
    recorder: Proxy
    name: str


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, upstream: RunningServer) -> Iterator[Written]:
    name = "refused-writes"
    image = im.simple_image(name)
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "7")
    recorder = Proxy(upstream.url)
    workdir = tmp_path_factory.mktemp("refused-writes")
    config = cache_config(workdir, [upstream_entry("docker.io", recorder.url)], default="docker.io")
    try:
        for cache in serving(start_cargobay(workdir, config=config)):
            assert_same_image(pull(cache.url, f"docker.io/library/{name}", "7"), image)
            yield Written(cache, image, recorder, name)
    finally:
        recorder.stop()


@pytest.mark.parametrize("method,path,params", [
    ("POST", "/v2/docker.io/library/{name}/blobs/uploads/", {}),
    ("POST", "/v2/docker.io/library/{name}/blobs/uploads/", {"digest": "{digest}"}),
    ("POST", "/v2/docker.io/library/{name}/blobs/uploads/", {"mount": "{digest}", "from": "team-a/app"}),
    ("POST", "/v2/library/{name}/blobs/uploads/", {"ns": "docker.io"}),
    ("PUT", "/v2/docker.io/library/{name}/manifests/8", {}),
    ("PUT", "/v2/library/{name}/manifests/8", {"ns": "docker.io"}),
    ("DELETE", "/v2/docker.io/library/{name}/manifests/{manifest}", {}),
    ("DELETE", "/v2/docker.io/library/{name}/manifests/7", {}),
    ("DELETE", "/v2/docker.io/library/{name}/blobs/{digest}", {}),
    ("DELETE", "/v2/library/{name}/manifests/{manifest}", {"ns": "docker.io"}),
])
def test_writes_into_a_cached_name_are_refused_with_405_naming_the_upstream(
        written: Written, method: str, path: str, params: dict[str, str]) -> None:
    cache, image, recorder, name = written.cache, written.image, written.recorder, written.name
    values = {"name": name, "digest": image.layers[0].digest, "manifest": image.digest}
    body = image.manifest if method == "PUT" else image.layers[0].data if "digest" in params else b""
    recorder.clear()
    query = {key: value.format(**values) for key, value in params.items()}
    headers = {"Content-Type": image.media_type} if method == "PUT" else {}
    r = httpx.request(method, cache.url + path.format(**values), params=query, content=body, headers=headers,
                      timeout=30)
    assert "docker.io" in error_of(r, 405, "UNSUPPORTED")
    assert not recorder.requests  # nothing went upstream
    assert manifest_digest(cache.url, f"docker.io/library/{name}", "7") == image.digest  # and nothing changed
    assert manifest_digest(cache.url, f"docker.io/library/{name}", image.digest) == image.digest


def test_local_repositories_beside_cached_ones(cached: tuple[RunningServer, im.Image], recorder: Proxy,
                                               upstream: RunningServer, name: str) -> None:
    cache, _ = cached
    local = im.simple_image(name + "-local")
    recorder.clear()
    with httpx.Client(timeout=30) as http:
        push_image(http, cache.url, f"team-a/{name}", local, "v1")  # no prefix: local
        assert_same_image(pull(cache.url, f"team-a/{name}", "v1"), local)
        # a local pattern is never proxied, also before anything was pushed there
        error_of(get_manifest(cache.url, f"team-b/{name}", "v1"), 404, "MANIFEST_UNKNOWN")
        assert not recorder.requests
        # a push of a name without prefix is local even where the upstream has that name
        push_blob(http, cache.url, name, local.config)
    assert not recorder.requests
    catalog = httpx.get(f"{cache.url}/v2/_catalog", timeout=30).json()["repositories"]
    assert f"team-a/{name}" in catalog and f"docker.io/library/{name}" in catalog


def test_an_existing_local_repository_shadows_the_default_upstream_and_a_prefix_does_not(
        cached: tuple[RunningServer, im.Image], recorder: Proxy, name: str) -> None:
    cache, cached_image = cached
    local = im.simple_image(name + "-shadow")
    with httpx.Client(timeout=30) as http:
        push_image(http, cache.url, f"library/{name}", local, "7")  # as Docker Engine would ask for it
    recorder.clear()
    # Without ns or prefix: the local repository exists, so it is served (Docker-mirror style clients).
    assert_same_image(pull(cache.url, f"library/{name}", "7"), local)
    # With a prefix or ns: always the upstream's.
    assert_same_image(pull(cache.url, f"docker.io/library/{name}", "7"), cached_image)
    assert manifest_digest(cache.url, f"library/{name}", "7", params={"ns": "docker.io"}) == cached_image.digest
    assert manifest_digest(cache.url, name, "7", params={"ns": "docker.io"}) == cached_image.digest
    # A name that exists nowhere locally still goes to the default upstream.
    assert manifest_digest(cache.url, name, "7") == cached_image.digest


def test_names_outside_an_upstreams_repositories_are_not_asked_for(
        upstream: RunningServer, recorder: Proxy, make_cache: Caches, name: str) -> None:
    image = im.simple_image(name)
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "7")
        push_image(http, upstream.url, f"other/{name}", image, "7")
    cache = make_cache([upstream_entry("docker.io", recorder.url, repositories=["library/*"])])
    assert manifest_digest(cache.url, f"docker.io/library/{name}", "7") == image.digest
    error_of(get_manifest(cache.url, f"docker.io/other/{name}", "7"), 404, "NAME_UNKNOWN")
    error_of(get_manifest(cache.url, f"other/{name}", "7", params={"ns": "docker.io"}), 404, "NAME_UNKNOWN")
    assert not requests_for(recorder, f"other/{name}")
