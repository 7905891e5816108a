"""A blob's first fetch through a cache that speaks HTTPS itself (`http.tls`): the bytes cannot go
straight to the socket there (they must be encrypted by the event loop's transport), so they are
relayed to the response; the same guarantees hold: the right bytes whole, a lying upstream's never."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from tests.e2e.test_tls import Pki, pki, start_tls_cargobay, trusting  # noqa: F401 - fixture
from tests.support import images as im
from tests.support.faultproxy import Proxy
from tests.support.images import push_image
from tests.support.servers import RunningServer

from .conftest import cas_data, sha256, upstream_entry


def big_image(seed: str) -> im.Image:
    """One incompressible 3 MiB layer: several reads from the upstream, several relayed chunks."""
    return im.build_image([im.make_layer([(f"{seed}.bin", os.urandom(3 << 20))], compression="")])


def outcome(url: str, context: object) -> str:
    with httpx.Client(timeout=10, verify=context) as client, client.stream("GET", url) as r:  # type: ignore[arg-type]
        if r.status_code != 200:
            return "refused"
        try:
            body = r.read()
        except httpx.HTTPError:
            return "cut"
        if int(r.headers["content-length"]) != len(body):
            return "cut"
        return f"complete: {sha256(body)}"


def test_a_first_fetch_over_https_is_relayed_whole_and_a_corrupt_one_is_cut(
        upstream: RunningServer, recorder: Proxy, pki: Pki, tmp_path: Path, name: str) -> None:  # noqa: F811
    good, bad = big_image(name + "-good"), big_image(name + "-bad")
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", good, "good")
        push_image(http, upstream.url, f"library/{name}", bad, "bad")
    proxy = {"connect_timeout": "2s", "read_timeout": "5s", "upstreams": [upstream_entry("docker.io", recorder.url)]}
    cache = start_tls_cargobay(tmp_path / "cache", pki, extra={"proxy": proxy})
    try:
        context = trusting(pki)
        base = f"{cache.url}/v2/docker.io/library/{name}/blobs"
        assert outcome(f"{base}/{good.layers[0].digest}", context) == f"complete: {good.layers[0].digest}"
        recorder.add_fault(path=f"/blobs/{bad.layers[0].digest}", method="GET", times=-1, action="corrupt")
        assert outcome(f"{base}/{bad.layers[0].digest}", context) in ("refused", "cut")
        assert cache.root is not None and not cas_data(cache.root, bad.layers[0].digest).exists()
        recorder.faults.clear()
        assert outcome(f"{base}/{bad.layers[0].digest}", context) == f"complete: {bad.layers[0].digest}"
        assert "Traceback" not in cache.log()
    finally:
        cache.stop()
