"""Two puller processes fetching images that share layers, into one store, at the same time."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import time

import httpx

from tests.support import images as im
from tests.support.images import push_image
from tests.support.servers import RunningServer

from .conftest import PullerRunner, verify_store


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

    procs = [puller.popen("--json", "fetch", "--plain-http", f"{proxy.hostport}/{repo}:{tag}")
             for tag in ("one", "two")]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
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


def test_waiting_for_another_process_s_blob_lock_can_be_cancelled(upstream: RunningServer, http: httpx.Client,
                                                                  repo: str, make_proxy: object,
                                                                  puller: PullerRunner) -> None:
    """While another process holds a layer's lock, Ctrl-C, or a sibling download that fails, ends
    the fetch at once instead of waiting for that process."""
    held, failing = blob(f"{repo}-held", 4096), blob(f"{repo}-failing", 4096)
    image = im.build_image([held, failing])
    push_image(http, upstream.url, repo, image, "v1")
    locks = puller.store / ".puller" / "locks"
    locks.mkdir(parents=True)
    fd = os.open(locks / f"sha256-{held.digest.split(':')[1]}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # "another puller" is downloading this layer
    proc = None
    try:
        proc = puller.popen("--json", "fetch", "--plain-http", f"{upstream.hostport}/{repo}:v1")
        assert proc.stdout is not None
        for line in proc.stdout:  # wait until it waits
            if json.loads(line)["event"] == "blob-wait":
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 130 and "interrupted" in err

        proxy = make_proxy()  # type: ignore[operator]
        proxy.add_fault(action="status", path=f"/blobs/{failing.digest}", status=404, times=-1)
        started = time.monotonic()
        proc = puller.popen("fetch", "--plain-http", f"{proxy.hostport}/{repo}:v1")
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 3 and failing.digest in err and time.monotonic() - started < 10
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        os.close(fd)
