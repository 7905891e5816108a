"""`registry gc` with proxy.keep_for: cached upstream content not pulled within keep_for is dropped
(and fetched again when asked for), what was pulled within it stays, and local repositories are
never expired. Age is simulated by setting the links' mtimes back (the disk layout's "pulled")."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support import images as im
from tests.support.faultproxy import Proxy
from tests.support.images import push_image
from tests.support.servers import REPO_ROOT, RunningServer

from .conftest import (
    Caches,
    assert_same_image,
    blob_gets,
    cas_data,
    layer_link,
    pull,
    revision_link,
    tag_link,
    upstream_entry,
)

DAY = 86400


def age_everything(root: Path, seconds: float) -> None:
    """Set every link (and any other file) below the repositories back by `seconds`."""
    then = time.time() - seconds
    for path in (root / "v1" / "repositories").rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))


def gc(cache: RunningServer, *flags: str) -> subprocess.CompletedProcess[str]:
    config = cache.log_path.parent / f"config-{cache.port}.yaml"
    result = subprocess.run([sys.executable, "-m", "registry", "gc", "--config", str(config), "--grace", "0", *flags],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_gc_drops_cached_content_not_pulled_within_keep_for_and_keeps_the_rest(
        upstream: RunningServer, recorder: Proxy, make_cache: Caches, name: str) -> None:
    stale, fresh, local = (im.simple_image(f"{name}-{kind}") for kind in ("stale", "fresh", "local"))
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}-stale", stale, "7")
        push_image(http, upstream.url, f"library/{name}-fresh", fresh, "7")
    cache = make_cache([upstream_entry("docker.io", recorder.url)], keep_for="1d", local=["team-*/*"])
    stale_repo, fresh_repo, local_repo = f"docker.io/library/{name}-stale", f"docker.io/library/{name}-fresh", \
        f"team-a/{name}"
    assert_same_image(pull(cache.url, stale_repo, "7"), stale)
    assert_same_image(pull(cache.url, fresh_repo, "7"), fresh)
    with httpx.Client(timeout=30) as http:
        push_image(http, cache.url, local_repo, local, "v1")
    root = cache.root
    assert root is not None

    # Two days pass; then (in a new process, which remembers no earlier touch) only `fresh` is pulled.
    age_everything(root, 2 * DAY)
    cache = make_cache.restart(cache)
    assert_same_image(pull(cache.url, fresh_repo, "7"), fresh)

    dry = gc(cache, "--dry-run")
    assert revision_link(root, stale_repo, stale.digest).exists(), dry.stdout
    gc(cache)

    assert not revision_link(root, stale_repo, stale.digest).exists()
    assert not tag_link(root, stale_repo, "7").exists()
    for blob in stale.blobs():
        assert not cas_data(root, blob.digest).exists(), f"{blob.digest} of the expired image is still stored"
    assert revision_link(root, fresh_repo, fresh.digest).exists()
    assert tag_link(root, fresh_repo, "7").exists()
    for blob in fresh.blobs():
        assert layer_link(root, fresh_repo, blob.digest).exists()
        assert cas_data(root, blob.digest).read_bytes() == blob.data
    assert revision_link(root, local_repo, local.digest).exists()  # local repositories never expire
    for blob in local.blobs():
        assert cas_data(root, blob.digest).exists()

    recorder.clear()
    assert_same_image(pull(cache.url, fresh_repo, fresh.digest), fresh)
    assert_same_image(pull(cache.url, local_repo, "v1"), local)
    assert not recorder.requests
    assert_same_image(pull(cache.url, stale_repo, "7"), stale)  # asked for again: fetched again
    assert sorted(blob_gets(recorder, f"library/{name}-stale")) == sorted(b.digest for b in stale.blobs())


def test_keep_for_zero_keeps_everything(upstream: RunningServer, recorder: Proxy, make_cache: Caches,
                                        name: str) -> None:
    image = im.simple_image(name)
    with httpx.Client(timeout=30) as http:
        push_image(http, upstream.url, f"library/{name}", image, "7")
    cache = make_cache([upstream_entry("docker.io", recorder.url)], keep_for="0")
    repo = f"docker.io/library/{name}"
    assert_same_image(pull(cache.url, repo, "7"), image)
    assert cache.root is not None
    age_everything(cache.root, 400 * DAY)
    gc(cache)
    assert revision_link(cache.root, repo, image.digest).exists()
    for blob in image.blobs():
        assert cas_data(cache.root, blob.digest).read_bytes() == blob.data
