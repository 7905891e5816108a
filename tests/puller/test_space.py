"""The puller does not fill a node's disk: `unpack`, `export` and `fetch` stop before the target
filesystem's free space falls below the reserve (`--min-free-space`, config `min_free_space`,
default 5% or at least 1 GiB), with one line and exit status 8, leaving no partial rootfs or
archive. The target is a small tmpfs the test mounts; the image is a layer that compresses very
well, so that the tmpfs would fill long before `--max-unpacked-size` stops anything."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import images as im
from tests.support.images import push_image
from tests.support.servers import RunningServer

from .conftest import FAST_NETWORK, PullerRunner, verify_store
from .test_errors import one_line

MiB = 1 << 20
FS_SIZE = 48 * MiB


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="module")
def bomb() -> im.Image:
    """One layer of 64 MiB of a repeated non-zero byte: ~64 KiB gzipped."""
    layer = im.make_layer([im.Entry("data", "dir", mode=0o755), ("data/fill.bin", b"\x07" * (64 * MiB))])
    return im.build_image([layer])


@pytest.fixture
def stored(upstream: RunningServer, http: httpx.Client, repo: str, bomb: im.Image,
           puller: PullerRunner) -> str:
    """The bomb image, pushed and fetched into the store (on the ordinary disk: fetch works)."""
    push_image(http, upstream.url, repo, bomb, "v1")
    ref = f"{upstream.hostport}/{repo}:v1"
    puller.ok("fetch", "--plain-http", ref)
    verify_store(puller.store)
    return ref


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_unpack_stops_before_the_reserve_and_leaves_nothing(stored: str, small_fs: Path,
                                                            puller: PullerRunner) -> None:
    rootfs = small_fs / "rootfs"
    for reserve, keep in (("16MiB", 16.0), ("50%", 24.0)):
        line = one_line(puller.run("unpack", stored, str(rootfs), "--min-free-space", reserve), 8)
        assert line.startswith(f"puller: unpack stopped: writing on would leave less than {keep} MiB free "), line
        assert "--min-free-space" in line
        free_then = re.search(r"\(([0-9.]+) MiB free now\)", line)
        assert free_then and float(free_then.group(1)) >= keep  # it stopped before, not after, the reserve
        assert leftovers(small_fs) == []
    puller.write_config('min_free_space = "16MiB"\n' + FAST_NETWORK)
    assert "would leave less than 16.0 MiB free" in one_line(puller.run("unpack", stored, str(rootfs)), 8)
    assert leftovers(small_fs) == []
    # Without a reserve the filesystem fills: still one line, status 8, and nothing left behind.
    line = one_line(puller.run("unpack", stored, str(rootfs), "--min-free-space", "0"), 8)
    assert "no space left" in line
    assert leftovers(small_fs) == []
    verify_store(puller.store)


def test_pull_keeps_the_reserve_on_the_rootfs(upstream: RunningServer, http: httpx.Client, repo: str, bomb: im.Image,
                                              small_fs: Path, puller: PullerRunner) -> None:
    """`pull` applies the reserve to the rootfs as `unpack` does; the download (on another
    filesystem) completed and stays in the store, verified."""
    push_image(http, upstream.url, repo, bomb, "v1")
    line = one_line(puller.run("pull", "--plain-http", f"{upstream.hostport}/{repo}:v1", str(small_fs / "rootfs"),
                               "--min-free-space", "16MiB"), 8)
    assert line.startswith("puller: unpack stopped: writing on would leave less than 16.0 MiB free "), line
    assert leftovers(small_fs) == []
    verify_store(puller.store)


def test_the_default_reserve_and_a_small_image_that_fits(upstream: RunningServer, http: httpx.Client, repo: str,
                                                        small_fs: Path, puller: PullerRunner) -> None:
    push_image(http, upstream.url, repo, im.simple_image("fits"), "v1")
    ref = f"{upstream.hostport}/{repo}:v1"
    puller.ok("fetch", "--plain-http", ref)
    # The default keeps 5% or at least 1 GiB free: more than this whole filesystem.
    line = one_line(puller.run("unpack", ref, str(small_fs / "rootfs")), 8)
    assert "1.0 GiB must stay free" in line and "5% of the filesystem, at least 1.0 GiB" in line
    assert leftovers(small_fs) == []
    puller.ok("unpack", ref, str(small_fs / "rootfs"), "--min-free-space", "16MiB")
    assert (small_fs / "rootfs" / "layer1" / "fits.bin").stat().st_size == 1024


def test_export_stops_before_the_reserve_and_leaves_no_partial_file(stored: str, small_fs: Path,
                                                                    puller: PullerRunner) -> None:
    archive = small_fs / "image.tar"
    line = one_line(puller.run("export", stored, str(archive), "--format", "docker-archive",
                               "--min-free-space", "16MiB"), 8)
    assert line.startswith("puller: export stopped: writing on would leave less than 16.0 MiB free"), line
    assert leftovers(small_fs) == []
    line = one_line(puller.run("export", stored, str(archive), "--format", "docker-archive",
                               "--min-free-space", "0"), 8)
    assert "no space left" in line and leftovers(small_fs) == []
    # The layers as stored (compressed) fit.
    puller.ok("export", stored, str(archive), "--format", "oci-archive", "--min-free-space", "16MiB")
    assert leftovers(small_fs) == ["image.tar"]


def test_fetch_keeps_the_reserve_on_the_store(upstream: RunningServer, http: httpx.Client, repo: str,
                                              small_fs: Path, puller: PullerRunner) -> None:
    big = im.build_image([im.make_layer([("noise.bin", os.urandom(40 * MiB))], compression="")])
    push_image(http, upstream.url, repo, big, "big")
    push_image(http, upstream.url, repo, im.simple_image("small-fetch"), "small")
    store = ["--store", str(small_fs / "store")]
    line = one_line(puller.run(*store, "fetch", "--plain-http", f"{upstream.hostport}/{repo}:big",
                               "--min-free-space", "16MiB", store=False), 8)
    assert line.startswith("puller: fetch: 40.0 MiB to write, but ") and "must stay free" in line, line
    assert leftovers(small_fs / "store" / ".puller" / "ingest") == []
    puller.ok(*store, "fetch", "--plain-http", f"{upstream.hostport}/{repo}:small", "--min-free-space", "16MiB",
              store=False)
    verify_store(small_fs / "store")
