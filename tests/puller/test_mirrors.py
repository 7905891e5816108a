"""Mirrors from the config file: tried in order before the host, each request carrying
`ns=<original host>`, falling back to the host unless the config forbids it."""

from __future__ import annotations

import hashlib

import httpx

from tests.support import images as im
from tests.support.images import push_image
from tests.support.servers import RunningServer

from .conftest import FAST_NETWORK, PullerRunner, verify_store


def registry_requests(proxy: object) -> list[object]:
    return [r for r in proxy.requests if r.path.startswith("/v2/") and r.path != "/v2/"]  # type: ignore[attr-defined]


def test_docker_hub_through_a_central_mirror(upstream: RunningServer, http: httpx.Client, repo: str,
                                             make_proxy: object, puller: PullerRunner) -> None:
    name = "cbtest-" + hashlib.sha256(repo.encode()).hexdigest()[:8]
    image = im.simple_image(name)
    push_image(http, upstream.url, f"library/{name}", image, "7")
    central = make_proxy()  # type: ignore[operator]
    puller.write_config(FAST_NETWORK + f'[hosts."docker.io"]\nmirrors = ["{central.url}"]\nfallback = false\n')
    puller.ok("fetch", f"{name}:7")  # like `docker pull redis:7`
    seen = registry_requests(central)
    assert seen and all(r.query.get("ns") == ["docker.io"] for r in seen)
    assert {r.path.split("/manifests/")[0] for r in seen if "/manifests/" in r.path} == {f"/v2/library/{name}"}
    index = verify_store(puller.store)
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == f"docker.io/library/{name}:7"
    assert "up to date" in puller.ok("fetch", f"index.docker.io/library/{name}:7").stdout


def test_mirror_order_and_fallback(upstream: RunningServer, http: httpx.Client, repo: str,
                                   make_proxy: object, puller: PullerRunner) -> None:
    image = im.simple_image("mirrored", layer_count=2)
    push_image(http, upstream.url, repo, image, "v1")
    origin, broken, empty, good = (make_proxy() for _ in range(4))  # type: ignore[operator]
    broken.add_fault(action="status", status=503, times=-1)
    empty.add_fault(action="status", status=404, times=-1)
    ref = f"{origin.hostport}/{repo}:v1"

    def config(mirrors: list[str], fallback: bool = True) -> None:
        listed = ", ".join(f'"{m}"' for m in mirrors)
        puller.write_config(FAST_NETWORK + f'[hosts."{origin.hostport}"]\nmirrors = [{listed}]\n'
                            f"fallback = {str(fallback).lower()}\ninsecure = true\n")

    # Broken and empty mirrors are passed over in order; the good one serves everything.
    config([broken.url, empty.url, good.url])
    puller.ok("fetch", ref)
    assert registry_requests(good) and not registry_requests(origin)
    for proxy in (broken, empty, good):
        assert all(r.query.get("ns") == [origin.hostport] for r in registry_requests(proxy))
    assert {r.path.rsplit("/", 1)[1] for r in registry_requests(good) if "/blobs/" in r.path} == \
        {b.digest for b in image.blobs()}

    # No mirror has it: the host itself, without ns.
    puller.ok("rm", ref)
    puller.ok("prune")
    config([empty.url])
    puller.ok("fetch", ref)
    assert registry_requests(origin) and all("ns" not in r.query for r in registry_requests(origin))
    verify_store(puller.store)

    # Fallback off: not found on the mirror is final.
    puller.ok("rm", ref)
    origin.clear()
    config([empty.url], fallback=False)
    assert puller.run("fetch", ref).returncode == 3
    assert not registry_requests(origin)

    # A mirror that is down entirely is skipped.
    good.stop()
    config([good.url])
    puller.ok("fetch", ref)
    assert registry_requests(origin)


def test_a_mirror_answering_errors_or_garbage_falls_back_to_the_host(upstream: RunningServer, http: httpx.Client,
                                                                     repo: str, make_proxy: object,
                                                                     puller: PullerRunner) -> None:
    """A mirror that refuses `ns` (400), answers 405, or serves something that is not a manifest is
    passed over like one that is down."""
    push_image(http, upstream.url, repo, im.simple_image("mirror-errors"), "v1")
    origin, bad_request, not_allowed, garbage = (make_proxy() for _ in range(4))  # type: ignore[operator]
    bad_request.add_fault(action="status", status=400, times=-1)
    not_allowed.add_fault(action="status", status=405, times=-1)
    garbage.add_fault(action="body", path="/manifests/", body=b'{"not": "a manifest"}', times=-1)
    mirrors = ", ".join(f'"{m.url}"' for m in (bad_request, not_allowed, garbage))
    puller.write_config(FAST_NETWORK + f'[hosts."{origin.hostport}"]\nmirrors = [{mirrors}]\ninsecure = true\n')
    puller.ok("fetch", f"{origin.hostport}/{repo}:v1")
    assert all(registry_requests(m) for m in (bad_request, not_allowed, garbage, origin))
    verify_store(puller.store)
