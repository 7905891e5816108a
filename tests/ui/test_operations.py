"""The operations page tells an on-call engineer what state the registry is in: a pull-through
upstream that answered and then went down (its cached tag still served, counted as a stale answer),
usage against a quota as pushes add to it, and the last garbage collection, run by `registry gc`
beside the server. Checked in a real browser against a real upstream (Debian's Distribution)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.clients import Skopeo
from tests.support.browser import Browser
from tests.support.images import push_image, simple_image
from tests.support.servers import REPO_ROOT, RunningServer, serving, start_cargobay, start_distribution

from . import content

UPSTREAM_HOST = "hub.example"
CACHED = f"{UPSTREAM_HOST}/library/tool"
QUOTA_GLOB = "team/*"
QUOTA_LIMIT = 50_000_000


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serving(start_distribution(tmp_path_factory.mktemp("ops-upstream")))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ops-store")


@pytest.fixture(scope="module")
def server(upstream: RunningServer, root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # tag_ttl 0: every pull of a tag asks the upstream, so one pull after it stops is a stale answer.
    config = {"storage": {"filesystem": {"root": str(root)}},
              "proxy": {"upstreams": [{"host": UPSTREAM_HOST, "url": upstream.url, "tag_ttl": 0}]},
              "policy": {"quotas": [{"repositories": QUOTA_GLOB, "limit": QUOTA_LIMIT}]}}
    yield from serving(start_cargobay(tmp_path_factory.mktemp("ops"), config=config))


def jobs(browser: Browser) -> dict[str, str]:
    return {row["data-job"] or "": row["data-finished"] or ""
            for row in browser.attrs("#jobs tr[data-job]", "data-job", "data-finished")}


def upstream_row(browser: Browser) -> dict[str, str | None]:
    [row] = browser.attrs("#upstreams tr[data-upstream]", "data-upstream", "data-state", "data-stale")
    return row


def test_operations_show_upstream_health_quota_usage_and_the_last_gc(
        browser: Browser, server: RunningServer, upstream: RunningServer, root: Path, skopeo: Skopeo) -> None:
    browser.visit("/ui/operations")
    assert upstream_row(browser) == {"data-upstream": UPSTREAM_HOST, "data-state": "unknown", "data-stale": "0"}
    assert jobs(browser) == {"gc": "", "retention": ""}  # never ran

    tool = simple_image("ops-tool", layer_count=1)
    local = simple_image("ops-local", layer_count=2)
    with httpx.Client(timeout=60) as client:
        push_image(client, upstream.url, "library/tool", tool, "v1")
        push_image(client, server.url, "team/app", local, "v1")
    skopeo.inspect_raw(content.docker_ref(server, f"{CACHED}:v1"))  # pulled through: the upstream answered

    browser.visit("/ui/operations")
    assert upstream_row(browser) == {"data-upstream": UPSTREAM_HOST, "data-state": "up", "data-stale": "0"}
    [quota] = browser.attrs("#quotas tr[data-prefix]", "data-prefix", "data-used", "data-limit")
    used = sum(blob.size for blob in local.blobs())  # config and layers, as the quota counts them
    assert quota == {"data-prefix": QUOTA_GLOB, "data-used": str(used), "data-limit": str(QUOTA_LIMIT)}

    browser.visit("/ui/")
    kinds = {row["data-repository"]: row["data-kind"]
             for row in browser.attrs("#repositories tr[data-repository]", "data-repository", "data-kind")}
    assert kinds == {CACHED: "cache", "team/app": "local"}

    upstream.stop()  # the upstream goes down: its cached tag is still served, as a stale answer
    assert skopeo.inspect_raw(content.docker_ref(server, f"{CACHED}:v1")) == tool.manifest
    gc = subprocess.run([sys.executable, "-m", "registry", "gc", "--root", str(root)], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0, gc.stderr

    browser.visit("/ui/operations")
    row = upstream_row(browser)
    assert row["data-state"] == "down"
    assert int(row["data-stale"] or 0) >= 1
    finished = jobs(browser)
    assert finished["gc"] and not finished["retention"]  # the collection `registry gc` ran, not a retention
    browser.screenshots("operations-upstream-down")
