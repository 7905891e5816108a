"""A registry killed mid-write (kill -9 during a tag push): tags/list shows only tags that resolve,
and the temp files left behind are swept by the periodic purge of `registry serve` and by
`registry gc`, never while young. The kill is simulated on disk exactly as the fs driver names its
temp files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from storage.driver.fs import TEMP_PREFIX
from tests.support.images import push_image, simple_image
from tests.support.servers import start_cargobay

from .helpers import assert_error, sha256

DAY = 86400


def killed_tag_write(root: Path, repo: str, tag: str) -> Path:
    """What a kill -9 inside the fs driver's `put` of a tag link leaves: the tag's directories and a
    temp file holding part of the digest, no link."""
    current = root / "v1" / "repositories" / repo / "_manifests" / "tags" / tag / "current"
    current.mkdir(parents=True)
    temp = current / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
    temp.write_bytes(b"sha256:3f0")
    return temp


def age(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_tags_list_shows_only_tags_that_resolve(client: httpx.Client, repo: str, data_root: Path) -> None:
    image = simple_image("resolving-tags")
    push_image(client, "", repo, image, "good")
    killed_tag_write(data_root, repo, "killed")
    # A tag left pointing at a manifest this repository does not have (a delete racing a tag push).
    dangling = data_root / "v1" / "repositories" / repo / "_manifests" / "tags" / "dangling" / "current"
    dangling.mkdir(parents=True)
    (dangling / "link").write_text(sha256(b"never pushed here"))
    assert client.get(f"/v2/{repo}/tags/list").json() == {"name": repo, "tags": ["good"]}
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 1})
    assert r.json()["tags"] == ["good"] and "Link" not in r.headers
    for tag in ("killed", "dangling"):
        assert_error(client.get(f"/v2/{repo}/manifests/{tag}"), 404, "MANIFEST_UNKNOWN")
        assert_error(client.head(f"/v2/{repo}/manifests/{tag}"), 404, "MANIFEST_UNKNOWN")
    # The tag can be pushed again over the debris.
    assert client.put(f"/v2/{repo}/manifests/killed", content=image.manifest,
                      headers={"Content-Type": image.media_type}).status_code == 201
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["good", "killed"]


def test_serve_purge_sweeps_stale_temp_files_anywhere_but_keeps_young_ones(tmp_path: Path) -> None:
    root = tmp_path / "data"
    stale = [age(killed_tag_write(root, "p/app", "v1"), 8 * DAY)]
    for where in ("v1/blobs/sha256/ab", "v1/repositories/p/app/_layers/sha256", "."):
        stale.append(age(_write(root / where / f"{TEMP_PREFIX}{uuid.uuid4().hex}"), 8 * DAY))
    young = _write(root / "v1" / "blobs" / f"{TEMP_PREFIX}{uuid.uuid4().hex}")
    # The purge runs about a second after start-up, then every second (default purge age: 7 days).
    server = start_cargobay(tmp_path, root=root, env={"CARGOBAY_STORAGE_UPLOADS_PURGE_INTERVAL": "1"})
    try:
        deadline = time.monotonic() + 60
        while any(path.exists() for path in stale) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [path for path in stale if path.exists()] == []
        assert young.exists()
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.get("/v2/p/app/tags/list").json()["tags"] == []  # the killed tag never existed
            image = simple_image("after-purge")
            push_image(c, "", "p/app", image, "v1")
            assert c.get("/v2/p/app/tags/list").json()["tags"] == ["v1"]
    finally:
        server.stop()


def test_gc_command_sweeps_temp_files_older_than_its_grace(tmp_path: Path) -> None:
    root = tmp_path / "data"
    stale = age(killed_tag_write(root, "g/app", "v1"), 2 * 3600)
    young = killed_tag_write(root, "g/app", "v2")
    result = subprocess.run([sys.executable, "-m", "registry", "gc", "--root", str(root)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    assert young.exists()  # younger than the default grace of an hour: a writer may still be at it


def _write(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"partial")
    return path
