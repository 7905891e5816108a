"""`puller push`: a stored image goes to another registry byte for byte (same digests), skipping
blobs the registry already has."""

from __future__ import annotations

import json

import httpx

from tests.support import images as im
from tests.support.images import push_image
from tests.support.servers import RunningServer

from .conftest import PullerRunner


def test_push_roundtrip(registry: RunningServer, upstream: RunningServer, http: httpx.Client, repo: str,
                        puller: PullerRunner, tmp_path_factory: object) -> None:
    image = im.build_image([im.make_layer([("a", b"a" * 4000)], "zstd"), im.make_layer([("b", b"b" * 4000)])])
    push_image(http, upstream.url, f"{repo}/src", image, "v1")
    source = f"{upstream.hostport}/{repo}/src:v1"
    puller.ok("fetch", "--plain-http", source)
    dest = f"{registry.hostport}/{repo}/copy:pushed"
    events = puller.events(puller.ok("--json", "push", "--plain-http", source, dest))
    assert events[-1]["event"] == "pushed" and events[-1]["digest"] == image.digest
    assert {e["digest"] for e in events if e["event"] == "blob-done"} == {b.digest for b in image.blobs()}
    r = http.get(f"{registry.url}/v2/{repo}/copy/manifests/pushed", headers={"Accept": image.media_type})
    assert r.content == image.manifest
    # Again (and without --plain-http: a loopback registry may answer on plain HTTP): every blob is there.
    events = puller.events(puller.ok("--json", "push", source, dest))
    assert [e["event"] for e in events].count("blob-exists") == len(image.blobs())
    # Fetched back into a fresh store, it is the same image.
    other = puller.store.parent / "other-store"
    result = puller.run("--store", str(other), "--json", "fetch", "--plain-http", dest, store=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["digest"] == image.digest
    assert puller.run("push", "--plain-http", "never-fetched:v1").returncode == 3
