"""Fixtures of the pull-through cache tests (issue 10).

- `upstream`: Debian's `docker-registry` (CNCF Distribution 2.8) without auth, shared by the
  session; every test pushes under a name of its own (`name`).
- `recorder`: the fault-injecting proxy (tests/support/faultproxy.py) in front of it, fresh per
  test: it records every request that reached the upstream and can corrupt, truncate or stall one.
- `make_cache`: starts `registry serve` with a `proxy` section whose upstreams carry host names
  like `docker.io` and `ghcr.io`: only names, each `url` is a loopback upstream.
- the real clients of the other suites: `puller` (tests/puller), `podman_binary` (tests/e2e).

Helpers pull an image through the cache over plain HTTP and check every digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import podman_binary  # noqa: F401 - fixture
from tests.puller.conftest import puller  # noqa: F401 - fixture
from tests.support.faultproxy import Proxy, Recorded
from tests.support.images import Image
from tests.support.servers import RunningServer, serving, start_cargobay, start_distribution

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- upstreams -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Distribution without auth: the upstream most tests cache (behind `recorder`)."""
    yield from serving(start_distribution(tmp_path_factory.mktemp("proxy-upstream")))


@pytest.fixture
def recorder(upstream: RunningServer) -> Iterator[Proxy]:
    """A recording, fault-injecting proxy in front of `upstream`: what the cache asked upstream."""
    proxy = Proxy(upstream.url)
    yield proxy
    proxy.stop()


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A one-component repository name unique to this test (the upstream is shared)."""
    return "t" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]


def requests_for(proxy: Proxy, repo: str, method: str | None = None, kind: str = "") -> list[Recorded]:
    """What reached the upstream for the upstream-side repository `repo`: `kind` is "manifests",
    "blobs", "tags" or "" for all of them."""
    prefix = f"/v2/{repo}/{kind}"
    return [r for r in proxy.requests if r.path.startswith(prefix) and (method is None or r.method == method)]


def blob_gets(proxy: Proxy, repo: str) -> list[str]:
    """The digests of every blob GET upstream for `repo`, one entry per request."""
    return [r.path.rsplit("/", 1)[1] for r in requests_for(proxy, repo, "GET", "blobs/")]


# -- the cache -------------------------------------------------------------------------------------
def upstream_entry(host: str, url: str, **options: Any) -> dict[str, Any]:
    """One `proxy.upstreams[]` entry."""
    return {"host": host, "url": url, **options}


def cache_config(workdir: Path, upstreams: list[dict[str, Any]], base: Mapping[str, Any] | None = None,
                 **proxy: Any) -> dict[str, Any]:
    """A config for start_cargobay: disk storage under workdir/data with deletes enabled (so that a
    405 on a cached name comes from the cache, not from deletes being off), then `base` (e.g. an
    auth config) merged over it, then the proxy section."""
    config: dict[str, Any] = {
        "storage": {"filesystem": {"root": str(workdir / "data")}, "delete": {"enabled": True}},
        "log": {"level": "info"},
    }
    config.update(base or {})
    config["proxy"] = {"connect_timeout": "2s", "read_timeout": "5s", **proxy, "upstreams": upstreams}
    return config


@dataclass
class Caches:
    """`make_cache(upstreams, **proxy)`: a running cache; all are stopped after the test."""

    workdir: Path
    servers: list[RunningServer] = field(default_factory=list)

    def __call__(self, upstreams: list[dict[str, Any]], *, env: dict[str, str] | None = None,
                 base: Mapping[str, Any] | None = None, **proxy: Any) -> RunningServer:
        workdir = self.workdir / f"cache-{len(self.servers)}"
        workdir.mkdir(parents=True)
        server = start_cargobay(workdir, config=cache_config(workdir, upstreams, base, **proxy), env=env,
                                root=workdir / "data")
        self.servers.append(server)
        return server

    def restart(self, server: RunningServer) -> RunningServer:
        """The same config and storage in a new process (no in-memory state carried over)."""
        server.stop()
        config_path = server.log_path.parent / f"config-{server.port}.yaml"
        restarted = start_cargobay(server.log_path.parent, config=yaml.safe_load(config_path.read_text()),
                                   env=server.env, root=server.root)
        self.servers.append(restarted)
        return restarted


@pytest.fixture
def make_cache(tmp_path: Path) -> Iterator[Caches]:
    caches = Caches(tmp_path)
    yield caches
    for server in caches.servers:
        server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """When a test fails, show the tail of every cache log it started next to the failure."""
    outcome = yield
    report = outcome.get_result()
    caches = getattr(item, "funcargs", {}).get("make_cache")
    if report.failed and isinstance(caches, Caches):
        for server in caches.servers:
            report.sections.append((f"cache {server.hostport} log (tail)", server.log()[-6000:]))


# -- pulling through the cache over plain HTTP -----------------------------------------------------
@dataclass
class Pulled:
    digest: str
    manifest: bytes
    headers: httpx.Headers
    blobs: dict[str, bytes]


def get_manifest(base_url: str, repo: str, reference: str, params: Mapping[str, str] | None = None,
                 headers: Mapping[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{base_url}/v2/{repo}/manifests/{reference}", params=params,
                     headers={"Accept": MANIFEST_ACCEPT, **(headers or {})}, timeout=60)


def manifest_digest(base_url: str, repo: str, reference: str, params: Mapping[str, str] | None = None,
                    headers: Mapping[str, str] | None = None) -> str:
    """The digest of the manifest the cache serves (its bytes hashed, checked against the header)."""
    r = get_manifest(base_url, repo, reference, params, headers)
    assert r.status_code == 200, f"GET {repo}:{reference} {dict(params or {})} → {r.status_code} {r.text[:500]}"
    assert r.headers["docker-content-digest"] == sha256(r.content)
    return sha256(r.content)


def get_blob(base_url: str, repo: str, digest: str, params: Mapping[str, str] | None = None,
             headers: Mapping[str, str] | None = None) -> bytes:
    r = httpx.get(f"{base_url}/v2/{repo}/blobs/{digest}", params=params, headers=headers, timeout=60)
    assert r.status_code == 200, f"GET blob {repo}@{digest} → {r.status_code} {r.text[:500]}"
    assert sha256(r.content) == digest, f"blob {digest} served with other bytes"
    return r.content


def pull(base_url: str, repo: str, reference: str, params: Mapping[str, str] | None = None,
         headers: Mapping[str, str] | None = None) -> Pulled:
    """Pull an image manifest and every blob it names, as a client would, checking every digest."""
    r = get_manifest(base_url, repo, reference, params, headers)
    assert r.status_code == 200, f"GET {repo}:{reference} {dict(params or {})} → {r.status_code} {r.text[:500]}"
    assert r.headers["docker-content-digest"] == sha256(r.content)
    manifest = json.loads(r.content)
    blobs = {desc["digest"]: get_blob(base_url, repo, desc["digest"], params, headers)
             for desc in [manifest["config"], *manifest["layers"]]}
    return Pulled(sha256(r.content), r.content, r.headers, blobs)


def assert_same_image(pulled: Pulled, image: Image) -> None:
    assert pulled.digest == image.digest
    assert pulled.manifest == image.manifest
    assert pulled.blobs == {blob.digest: blob.data for blob in image.blobs()}


def error_of(response: httpx.Response, status: int, code: str) -> str:
    """Assert an OCI error JSON answer with `status` and `code`; return its messages, joined."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    errors = response.json()["errors"]
    assert code in [e["code"] for e in errors], response.text
    return " ".join(str(e.get("message", "")) for e in errors)


# -- what the cache stored on disk -----------------------------------------------------------------
def layer_link(root: Path, repo: str, digest: str) -> Path:
    return root / "v1" / "repositories" / repo / "_layers" / "sha256" / digest.split(":")[1] / "link"


def revision_link(root: Path, repo: str, digest: str) -> Path:
    return root / "v1" / "repositories" / repo / "_manifests" / "revisions" / "sha256" / digest.split(":")[1] / "link"


def tag_link(root: Path, repo: str, tag: str) -> Path:
    return root / "v1" / "repositories" / repo / "_manifests" / "tags" / tag / "current" / "link"


def cas_data(root: Path, digest: str) -> Path:
    hex_ = digest.split(":")[1]
    return root / "v1" / "blobs" / "sha256" / hex_[:2] / hex_ / "data"


def assert_cas_sound(root: Path) -> int:
    """Every blob in the store hashes to its name; returns how many there are."""
    count = 0
    for data in (root / "v1" / "blobs").rglob("data"):
        assert "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest() == "sha256:" + data.parent.name, \
            f"{data} holds other bytes than its digest"
        count += 1
    return count
