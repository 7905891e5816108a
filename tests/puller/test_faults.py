"""A fault-injecting proxy between the puller and a registry: verification fails loudly, transient
failures are retried, interrupted downloads resume with Range (also after the process is killed)."""

from __future__ import annotations

import hashlib
import os
import signal
import time

import httpx
import pytest

from tests.support import images as im
from tests.support.images import push_image
from tests.support.servers import RunningServer

from .conftest import PullerRunner, verify_store

BIG = 3 * 1024 * 1024


def big_image(seed: str) -> im.Image:
    """One incompressible ~3 MiB layer (stored uncompressed, so the blob is what we control)."""
    data = b"".join(hashlib.sha256(f"{seed}{i}".encode()).digest() for i in range(BIG // 32))
    return im.build_image([im.make_layer([("big.bin", data)], compression="")])


@pytest.fixture
def image_ref(upstream: RunningServer, http: httpx.Client, repo: str,
              make_proxy: object) -> tuple[object, str, im.Image]:
    image = big_image(repo)
    push_image(http, upstream.url, repo, image, "v1")
    proxy = make_proxy()  # type: ignore[operator]
    return proxy, f"{proxy.hostport}/{repo}:v1", image


def blob_path(image: im.Image) -> str:
    return f"/blobs/{image.layers[0].digest}"


def layer_gets(proxy: object, image: im.Image) -> list[object]:
    return [r for r in proxy.requests if r.method == "GET" and r.path.endswith(blob_path(image))]  # type: ignore[attr-defined]


def test_corrupt_layer_fails_loudly(image_ref: tuple, puller: PullerRunner) -> None:
    proxy, ref, image = image_ref
    proxy.add_fault(action="corrupt", path=blob_path(image), times=-1)
    result = puller.run("fetch", "--plain-http", ref)
    assert result.returncode == 5, result.stderr
    assert result.stderr.count("\n") == 1
    assert image.layers[0].digest in result.stderr and "verification" in result.stderr
    assert not (puller.store / "blobs" / "sha256" / image.layers[0].digest.split(":")[1]).exists()
    assert puller.run("inspect", ref).returncode == 3
    # The partial file was dropped: a clean retry succeeds.
    proxy.clear()
    puller.ok("fetch", "--plain-http", ref)
    verify_store(puller.store)


def test_overlong_body_is_refused(image_ref: tuple, puller: PullerRunner) -> None:
    proxy, ref, image = image_ref
    proxy.add_fault(action="extra", path=blob_path(image), times=-1)
    result = puller.run("fetch", "--plain-http", ref)
    assert result.returncode == 5 and "refused" in result.stderr


def test_short_body_everywhere_is_a_verification_failure(image_ref: tuple, puller: PullerRunner) -> None:
    proxy, ref, image = image_ref
    proxy.add_fault(action="short", path=blob_path(image), keep=0, times=-1)
    result = puller.run("fetch", "--plain-http", ref)
    assert result.returncode == 5 and "ended at 0" in result.stderr


def test_truncated_and_dropped_downloads_resume(image_ref: tuple, puller: PullerRunner) -> None:
    proxy, ref, image = image_ref
    proxy.add_fault(action="drop", path=blob_path(image), times=1)
    proxy.add_fault(action="truncate", path=blob_path(image), keep=1_000_000, times=1)
    proxy.add_fault(action="truncate", path=blob_path(image), keep=500_000, times=1)
    puller.ok("fetch", "--plain-http", ref)
    ranges = [r.headers.get("Range") for r in layer_gets(proxy, image)]
    assert ranges == [None, None, "bytes=1000000-", "bytes=1500000-"]
    verify_store(puller.store)


def test_stall_times_out_and_resumes(image_ref: tuple, puller: PullerRunner) -> None:
    proxy, ref, image = image_ref
    proxy.add_fault(action="stall", path=blob_path(image), keep=200_000, delay=8, times=1)
    started = time.monotonic()
    puller.ok("fetch", "--plain-http", ref)
    assert time.monotonic() - started < 7  # read timeout (2 s in the test config), not the stall
    assert [r.headers.get("Range") for r in layer_gets(proxy, image)] == [None, "bytes=200000-"]


def test_5xx_and_429_are_retried(image_ref: tuple, puller: PullerRunner) -> None:
    proxy, ref, image = image_ref
    proxy.add_fault(action="status", path="/manifests/", status=503, times=2)
    proxy.add_fault(action="status", path=blob_path(image), status=429, retry_after="1", times=1)
    proxy.add_fault(action="status", path=blob_path(image), status=502, times=1)
    started = time.monotonic()
    puller.ok("fetch", "--plain-http", ref)
    assert time.monotonic() - started >= 1.0  # Retry-After honoured
    assert len(layer_gets(proxy, image)) == 3


def test_persistent_failure_is_a_network_error(image_ref: tuple, puller: PullerRunner) -> None:
    proxy, ref, _ = image_ref
    proxy.add_fault(action="status", path="/manifests/", status=503, times=-1)
    result = puller.run("fetch", "--plain-http", ref)
    assert result.returncode == 6 and "gave up after 5 attempts" in result.stderr
    proxy.stop()
    result = puller.run("fetch", "--plain-http", ref)
    assert result.returncode == 6 and result.stderr.count("\n") == 1


def test_oversized_manifest_and_config_are_refused(upstream: RunningServer, http: httpx.Client, repo: str,
                                                   make_proxy: object, puller: PullerRunner) -> None:
    proxy = make_proxy()  # type: ignore[operator]
    proxy.add_fault(action="body", path="/manifests/huge", body=b" " * (4 * 1024 * 1024 + 1), times=-1)
    result = puller.run("fetch", "--plain-http", f"{proxy.hostport}/{repo}:huge")
    assert result.returncode == 5 and "refused" in result.stderr
    fat = im.build_image([im.make_layer([("x", b"x")])], config_extra={"padding": "p" * (4 * 1024 * 1024)})
    push_image(http, upstream.url, repo, fat, "fat")
    result = puller.run("fetch", "--plain-http", f"{upstream.hostport}/{repo}:fat")
    assert result.returncode == 5 and "config" in result.stderr


def test_resume_after_the_process_is_killed(image_ref: tuple, puller: PullerRunner) -> None:
    proxy, ref, image = image_ref
    proxy.add_fault(action="stall", path=blob_path(image), keep=1_200_000, delay=30, times=1)
    slow_config = "[network]\nretries = 2\nbackoff = 0.05\nread_timeout = 60\n"
    proc = puller.popen("fetch", "--plain-http", ref, env={"PULLER_CONFIG": str(puller.write_config(slow_config))})
    partial = puller.store / ".puller" / "ingest" / ("sha256-" + image.layers[0].digest.split(":")[1])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (partial.exists() and partial.stat().st_size >= 1024 * 1024):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    kept = partial.stat().st_size
    assert 1024 * 1024 <= kept <= 1_200_000
    events = puller.events(puller.ok("--json", "fetch", "--plain-http", ref))
    starts = [e for e in events if e["event"] == "blob-start" and e["digest"] == image.layers[0].digest]
    assert starts[0]["offset"] == kept
    assert layer_gets(proxy, image)[-1].headers.get("Range") == f"bytes={kept}-"
    index = verify_store(puller.store)
    assert [e["digest"] for e in index["manifests"]] == [image.digest]


def test_a_bad_partial_file_is_fetched_again(image_ref: tuple, puller: PullerRunner) -> None:
    proxy, ref, image = image_ref
    digest = image.layers[0].digest
    partial = puller.store / ".puller" / "ingest" / ("sha256-" + digest.split(":")[1])
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\xff" * 100_000)  # not a prefix of the blob
    puller.ok("fetch", "--plain-http", ref)
    assert [r.headers.get("Range") for r in layer_gets(proxy, image)] == ["bytes=100000-", None]
    verify_store(puller.store)
