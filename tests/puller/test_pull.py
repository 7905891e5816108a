"""`puller pull REF DIR`: fetch and unpack in one process, each layer applied as soon as it and the
layers below it are downloaded and verified. It builds what `fetch` + `unpack` build, resumes what
an earlier run left, refuses a corrupt layer leaving nothing behind, and really overlaps: layers
are applied while a later one is still downloading (seen in the progress events)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
from pathlib import Path

import httpx

from tests.support import images as im
from tests.support.images import push_image
from tests.support.servers import RunningServer

from .conftest import PullerRunner, verify_store
from .test_errors import one_line
from .test_unpack import assert_same_tree, base_layer, second_layer, third_layer

MiB = 1 << 20


def layered_image() -> im.Image:
    """Every whiteout, link, mode and owner case of the unpack tests, in gzip, zstd and plain layers."""
    return im.build_image([im.make_layer(base_layer(), "gzip"), im.make_layer(second_layer(), "zstd"),
                           im.make_layer(third_layer(), "")])


def noise(seed: str, size: int) -> bytes:
    return b"".join(hashlib.sha256(f"{seed}{i}".encode()).digest() for i in range(size // 32))


def big_last_layer_image(seed: str) -> im.Image:
    """Two small layers and a last one of 2 MiB stored uncompressed (its bytes are what the proxy
    cuts, stalls or corrupts)."""
    return im.build_image([
        im.make_layer([im.Entry("one", "dir", mode=0o755), ("one/a", b"first layer")]),
        im.make_layer([im.Entry("two", "dir", mode=0o755), ("two/b", b"second layer")]),
        im.make_layer([("big.bin", noise(seed, 2 * MiB))], compression=""),
    ])


def events(result_stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in result_stdout.splitlines() if line.startswith("{")]


def hidden_leftovers(parent: Path) -> list[str]:
    """Staging directories an unpack left beside its destination."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and p.name.endswith(".unpacking"))


def test_pull_builds_what_fetch_and_unpack_build(registry: RunningServer, http: httpx.Client, repo: str,
                                                 puller: PullerRunner) -> None:
    image = layered_image()
    push_image(http, registry.url, repo, image, "v1")
    ref = f"{registry.hostport}/{repo}:v1"
    pulled, unpacked = puller.home / "pulled", puller.home / "unpacked"
    result = puller.ok("--json", "pull", "--plain-http", ref, str(pulled))
    seen = events(result.stdout)
    applied = [e for e in seen if e["event"] == "layer-applied"]
    assert [(e["index"], e["digest"]) for e in applied] == [(i, layer.digest) for i, layer in
                                                            enumerate(image.layers, 1)]
    assert seen[-1]["event"] == "unpacked" and seen[-1]["path"] == str(pulled) and seen[-1]["digest"] == image.digest
    assert verify_store(puller.store)["manifests"][0]["digest"] == image.digest  # the store has the image too

    other = ["--store", str(puller.home / "other-store")]
    puller.ok(*other, "fetch", "--plain-http", ref, store=False)
    puller.ok(*other, "unpack", ref, str(unpacked), store=False)
    assert_same_tree(pulled, unpacked)
    assert (pulled / "same/x").read_bytes().startswith(b"upper") and not (pulled / "gone").exists()

    # Stored and up to date: nothing is downloaded, the layers are applied from the store; --bundle.
    bundle = puller.home / "bundle"
    seen = events(puller.ok("--json", "pull", "--plain-http", "--bundle", ref, str(bundle)).stdout)
    assert [e["event"] for e in seen if e["event"] not in ("warning",)] == \
        ["up-to-date", "layer-applied", "layer-applied", "layer-applied", "unpacked"]
    puller.ok(*other, "unpack", "--bundle", ref, str(puller.home / "unpacked-bundle"), store=False)
    assert_same_tree(bundle / "rootfs", puller.home / "unpacked-bundle" / "rootfs")
    assert json.loads((bundle / "config.json").read_text()) == \
        json.loads((puller.home / "unpacked-bundle" / "config.json").read_text())

    # A destination that is not empty is refused before anything is fetched.
    line = one_line(puller.run("pull", "--plain-http", f"{registry.hostport}/{repo}:absent", str(pulled)), 2)
    assert "is not empty" in line


def test_pull_resumes_a_partly_fetched_image(upstream: RunningServer, http: httpx.Client, repo: str,
                                             make_proxy: object, puller: PullerRunner) -> None:
    image = big_last_layer_image(repo)
    push_image(http, upstream.url, repo, image, "v1")
    proxy = make_proxy()  # type: ignore[operator]
    ref = f"{proxy.hostport}/{repo}:v1"
    big = image.layers[-1]
    proxy.add_fault(action="truncate", path=f"/blobs/{big.digest}", keep=MiB, times=-1)
    puller.write_config("[network]\nretries = 0\nread_timeout = 5\n")
    rootfs = puller.home / "rootfs"
    line = one_line(puller.run("pull", "--plain-http", ref, str(rootfs)), 6)
    assert big.digest in line
    assert not rootfs.exists() and hidden_leftovers(puller.home) == []
    partial = puller.store / ".puller" / "ingest" / big.digest.replace(":", "-")
    assert partial.stat().st_size == MiB  # kept for the next run

    proxy.clear()
    puller.write_config("[network]\nretries = 2\nbackoff = 0.05\n")
    seen = events(puller.ok("--json", "pull", "--plain-http", ref, str(rootfs)).stdout)
    starts = {e["digest"]: e for e in seen if e["event"] == "blob-start"}
    assert starts[big.digest]["offset"] == MiB
    ranges = [r.headers.get("Range") for r in proxy.requests if r.path.endswith(f"/blobs/{big.digest}")]
    assert ranges == [f"bytes={MiB}-"]
    assert (rootfs / "big.bin").read_bytes() == noise(repo, 2 * MiB) and (rootfs / "two" / "b").exists()
    verify_store(puller.store)


def test_pull_refuses_a_corrupt_layer_and_leaves_nothing(upstream: RunningServer, http: httpx.Client, repo: str,
                                                         make_proxy: object, puller: PullerRunner) -> None:
    image = big_last_layer_image(repo)
    push_image(http, upstream.url, repo, image, "v1")
    proxy = make_proxy()  # type: ignore[operator]
    ref = f"{proxy.hostport}/{repo}:v1"
    big = image.layers[-1]
    proxy.add_fault(action="corrupt", path=f"/blobs/{big.digest}", times=-1)
    rootfs = puller.home / "rootfs"
    line = one_line(puller.run("pull", "--plain-http", ref, str(rootfs)), 5)
    assert big.digest in line and "verification" in line
    assert not rootfs.exists() and hidden_leftovers(puller.home) == []
    assert not (puller.store / "blobs" / "sha256" / big.digest.split(":")[1]).exists()
    assert puller.run("inspect", ref).returncode == 3  # not recorded either


def test_layers_are_applied_while_a_later_one_downloads(upstream: RunningServer, http: httpx.Client, repo: str,
                                                        make_proxy: object, puller: PullerRunner) -> None:
    """The last layer's download stalls after 64 KiB for 3 s (then breaks off and resumes): the
    layers below it are applied meanwhile, which the order of the progress events shows."""
    image = big_last_layer_image(repo)
    push_image(http, upstream.url, repo, image, "v1")
    proxy = make_proxy()  # type: ignore[operator]
    big = image.layers[-1]
    proxy.add_fault(action="stall", path=f"/blobs/{big.digest}", keep=64 * 1024, delay=3.0)
    puller.write_config("[network]\nretries = 2\nbackoff = 0.05\nread_timeout = 30\n")
    rootfs = puller.home / "rootfs"
    seen = events(puller.ok("--json", "pull", "--plain-http", f"{proxy.hostport}/{repo}:v1", str(rootfs)).stdout)
    order = [(e["event"], e.get("index") or e["digest"]) for e in seen if e["event"] in ("layer-applied", "blob-done")]
    last_done = order.index(("blob-done", big.digest))
    assert order.index(("layer-applied", 1)) < last_done and order.index(("layer-applied", 2)) < last_done, order
    assert order[-1] == ("layer-applied", 3)
    assert (rootfs / "one" / "a").read_bytes() == b"first layer" and (rootfs / "big.bin").stat().st_size == 2 * MiB
    assert os.listdir(puller.home).count("rootfs") == 1 and hidden_leftovers(puller.home) == []


def test_an_interrupted_pull_leaves_no_rootfs(upstream: RunningServer, http: httpx.Client, repo: str,
                                              puller: PullerRunner) -> None:
    """Ctrl-C while a layer is still awaited (here: another process holds its lock), with the one
    below it already applied: exit 130, no rootfs, no staging directory, the applied layer's blob kept."""
    image = big_last_layer_image(repo)
    push_image(http, upstream.url, repo, image, "v1")
    held = image.layers[-1]
    locks = puller.store / ".puller" / "locks"
    locks.mkdir(parents=True)
    fd = os.open(locks / f"sha256-{held.digest.split(':')[1]}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # "another puller" is downloading the last layer
    rootfs = puller.home / "rootfs"
    proc = puller.popen("--json", "pull", "--plain-http", f"{upstream.hostport}/{repo}:v1", str(rootfs))
    try:
        assert proc.stdout is not None
        waiting = applied = False
        for line in proc.stdout:  # until it waits for the held layer with the layers below it applied
            event = json.loads(line)
            waiting = waiting or (event["event"] == "blob-wait" and event["digest"] == held.digest)
            applied = applied or (event["event"] == "layer-applied" and event["index"] == 2)
            if waiting and applied:
                break
        assert waiting and applied
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 130 and "interrupted" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        os.close(fd)
    assert not rootfs.exists() and hidden_leftovers(puller.home) == []
    assert (puller.store / "blobs" / "sha256" / image.layers[0].digest.split(":")[1]).exists()
