"""The three ways real clients reach a cached upstream, all served from one cache: `puller fetch`
through a mirror (`ns=docker.io`), skopeo and podman through a registries.conf prefix
(`/v2/docker.io/library/...`), and Docker Engine's registry-mirrors style (neither, the default
upstream). Digests are the upstream's."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.clients import Skopeo, client_env, engine_image, oci_layout_contents, podman
from tests.puller.conftest import FAST_NETWORK, PullerRunner, verify_store
from tests.support import images as im
from tests.support.faultproxy import Proxy
from tests.support.images import push_image
from tests.support.servers import RunningServer
from tests.support.tools import require_tool

from .conftest import (
    Caches,
    assert_same_image,
    blob_gets,
    error_of,
    get_manifest,
    manifest_digest,
    pull,
    requests_for,
    upstream_entry,
)


def prefix_mirror(cache: RunningServer, host: str = "docker.io") -> str:
    """registries.conf lines sending every `host/...` reference to the cache with a host prefix."""
    return f'\n[[registry]]\nprefix = "{host}"\nlocation = "{cache.hostport}/{host}"\ninsecure = true\n'


def test_puller_fetch_through_a_mirror_sends_ns_and_gets_the_upstream_image(
        upstream: RunningServer, recorder: Proxy, make_cache: Caches, puller: PullerRunner, name: str) -> None:
    image = im.simple_image(name)
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "7")
    cache = make_cache([upstream_entry("docker.io", recorder.url)])
    puller.write_config(FAST_NETWORK + f'[hosts."docker.io"]\nmirrors = ["{cache.url}"]\nfallback = false\n')

    puller.ok("fetch", f"{name}:7")  # like `docker pull redis:7`

    index = verify_store(puller.store)
    assert [m["digest"] for m in index["manifests"]] == [image.digest]
    assert sorted(blob_gets(recorder, f"library/{name}")) == sorted(b.digest for b in image.blobs())

    # The answers to ns requests name the namespace; a one-component name gets library/ for docker.io.
    for repo in (f"library/{name}", name):
        r = get_manifest(cache.url, repo, "7", params={"ns": "docker.io"})
        assert r.status_code == 200, r.text
        assert r.headers["oci-namespace"] == "docker.io"
        assert r.content == image.manifest

    # One cache: the prefixed name is the same cached repository, so nothing more goes upstream.
    recorder.clear()
    assert_same_image(pull(cache.url, f"docker.io/library/{name}", image.digest), image)
    assert_same_image(pull(cache.url, f"docker.io/{name}", image.digest), image)
    assert not requests_for(recorder, f"library/{name}")


def test_an_ns_that_is_no_upstream_is_served_from_local_repositories_only(
        upstream: RunningServer, recorder: Proxy, make_cache: Caches, name: str) -> None:
    image, seeded = im.simple_image(name), im.simple_image(name + "-seeded")
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "7")
        cache = make_cache([upstream_entry("docker.io", recorder.url)], default="docker.io")
        push_image(http, cache.url, f"library/{name}-seeded", seeded, "7")  # a registry seeded by pushing
    # ns names no configured upstream: ignored, so never the default upstream either (docs/proxy.md)
    error_of(get_manifest(cache.url, f"library/{name}", "7", params={"ns": "quay.io"}), 404, "MANIFEST_UNKNOWN")
    assert not recorder.requests
    assert_same_image(pull(cache.url, f"library/{name}-seeded", "7", params={"ns": "quay.io"}), seeded)
    assert not recorder.requests


def test_skopeo_and_podman_pull_through_a_registries_conf_prefix(
        upstream: RunningServer, recorder: Proxy, make_cache: Caches, podman_binary: str, tmp_path: Path,
        name: str) -> None:
    image = im.simple_image(name, layer_count=2)
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "7")
    cache = make_cache([upstream_entry("docker.io", recorder.url)])

    skopeo = Skopeo(require_tool("skopeo"), client_env(tmp_path / "skopeo"))
    registries_conf = skopeo.env["CONTAINERS_REGISTRIES_CONF"]
    with open(registries_conf, "a") as conf:
        conf.write(prefix_mirror(cache))
    # skopeo 1.9 reads the system registries.conf whatever CONTAINERS_REGISTRIES_CONF says: name it
    skopeo("--registries-conf", registries_conf, "copy", "--quiet", f"docker://docker.io/library/{name}:7",
           f"oci:{tmp_path / 'out'}:7")
    descriptors, blobs = oci_layout_contents(tmp_path / "out")
    assert [d["digest"] for d in descriptors] == [image.digest]
    assert {b.digest for b in image.blobs()} <= set(blobs)
    assert {r.path for r in requests_for(recorder, f"library/{name}", kind="blobs/")} == \
        {f"/v2/library/{name}/blobs/{b.digest}" for b in image.blobs()}

    engine = podman(podman_binary, tmp_path / "podman")
    try:
        with open(engine.env["CONTAINERS_REGISTRIES_CONF"], "a") as conf:
            conf.write(prefix_mirror(cache))
        recorder.clear()
        engine("pull", f"docker.io/library/{name}:7")
        pulled = engine_image(engine, f"docker.io/library/{name}:7")
        assert pulled["Digest"] == image.digest
        assert "sha256:" + pulled["Id"] == image.config.digest
        assert not blob_gets(recorder, f"library/{name}")  # skopeo's pull filled the cache
    finally:
        engine.close()


def test_docker_mirror_style_requests_go_to_the_default_upstream(
        upstream: RunningServer, recorder: Proxy, make_cache: Caches, name: str) -> None:
    image = im.simple_image(name, flavour="docker")
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "7")
    cache = make_cache([upstream_entry("docker.io", recorder.url)], default="docker.io")

    # Docker Engine with registry-mirrors asks for /v2/library/<name>/...; a person may type <name>.
    pulled = pull(cache.url, f"library/{name}", "7")
    assert_same_image(pulled, image)
    assert pulled.headers["content-type"] == im.DOCKER_MANIFEST
    assert manifest_digest(cache.url, name, "7") == image.digest
    assert {r.path.split("/manifests/")[0] for r in requests_for(recorder, f"library/{name}", kind="manifests")} \
        == {f"/v2/library/{name}"}

    # It is the cached docker.io/library/<name>: the prefixed name needs nothing from upstream.
    recorder.clear()
    assert_same_image(pull(cache.url, f"docker.io/library/{name}", image.digest), image)
    assert not recorder.requests


def test_without_a_default_upstream_names_without_ns_or_prefix_are_local(
        upstream: RunningServer, recorder: Proxy, make_cache: Caches, name: str) -> None:
    image = im.simple_image(name)
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "7")
    cache = make_cache([upstream_entry("docker.io", recorder.url)], default="")
    error_of(get_manifest(cache.url, f"library/{name}", "7"), 404, "MANIFEST_UNKNOWN")
    assert not recorder.requests
    assert manifest_digest(cache.url, f"docker.io/library/{name}", "7") == image.digest
