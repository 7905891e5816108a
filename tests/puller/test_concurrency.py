"""Two puller processes fetching images that share layers, into one store, at the same time."""

from __future__ import annotations

import hashlib
import json

import httpx

from tests.support import images as im
from tests.support.servers import RunningServer

from .conftest import PullerRunner, verify_store
from tests.support.images import push_image


def blob(seed: str, size: int = 1024 * 1024) -> im.Blob:
    data = b"".join(hashlib.sha256(f"{seed}{i}".encode()).digest() for i in range(size // 32))
    return im.make_layer([(f"{seed}.bin", data)], compression="")


def test_two_processes_share_layers(upstream: RunningServer, http: httpx.Client, repo: str,
                                    make_proxy: object, puller: PullerRunner) -> None:
    shared = [blob(f"{repo}-shared{i}") for i in range(3)]
    one = im.build_image([*shared, blob(f"{repo}-one")])
    two = im.build_image([*shared, blob(f"{repo}-two")])
    push_image(http, upstream.url, repo, one, "one")
    push_image(http, upstream.url, repo, two, "two")
    proxy = make_proxy()  # type: ignore[operator]
    for layer in shared:  # slow enough that the two processes overlap on every shared layer
        proxy.add_fault(action="slow", path=f"/blobs/{layer.digest}", delay=0.12, times=-1)

    procs = [puller.popen("--json", "fetch", "--plain-http", f"{proxy.hostport}/{repo}:{tag}") for tag in ("one", "two")]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    events = [json.loads(line) for out, _ in outputs for line in out.splitlines()]

    # Each shared layer crossed the network once; the other process waited for it or found it.
    for layer in shared:
        gets = [r for r in proxy.requests if r.method == "GET" and r.path.endswith(layer.digest)]
        assert len(gets) == 1, layer.digest
        kinds = sorted(e["event"] for e in events if e.get("digest") == layer.digest and e["event"] != "blob-progress")
        assert kinds.count("blob-done") == 1 and kinds.count("blob-exists") == 1
    assert any(e["event"] == "blob-wait" for e in events)

    index = verify_store(puller.store)
    assert sorted(e["digest"] for e in index["manifests"]) == sorted([one.digest, two.digest])
