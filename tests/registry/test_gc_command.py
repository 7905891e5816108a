"""`registry gc` as a user runs it (progress on a terminal, the summary, the lease another replica
holds, `--wait`) and `registry serve` collecting on its own every `gc.interval`."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from ocispec.digest import Digest
from storage import Storage
from storage.driver.fs import FilesystemDriver
from storage.lease import Lease
from tests.support.servers import REPO_ROOT, start_cargobay

from .helpers import sha256


def _store_with_orphans(root: Path, count: int) -> list[str]:
    """`count` blobs no manifest names, old enough for any grace period."""
    storage = Storage(FilesystemDriver(root))
    digests = []
    for i in range(count):
        data = f"orphan {i}".encode()
        status = storage.uploads.start("gc/orphans")
        storage.uploads.append("gc/orphans", status.id, [data])
        digest = sha256(data)
        storage.uploads.complete("gc/orphans", status.id, Digest.parse(digest))
        digests.append(digest)
    old = time.time() - 7200
    for path in (root / "v1").rglob("*"):
        os.utime(path, (old, old))
    return digests


def _gc(root: Path, *extra: str, stderr: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "registry", "gc", "--root", str(root), *extra],
                          stdout=subprocess.PIPE, stderr=stderr if stderr is not None else subprocess.PIPE,
                          text=True, cwd=REPO_ROOT, timeout=120)


def test_gc_shows_progress_on_a_terminal_and_ends_with_a_summary(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _store_with_orphans(root, 3)
    leader, follower = pty.openpty()
    try:
        done = _gc(root, stderr=follower)
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert done.returncode == 0, done.stdout
    assert b"deleting blobs: 3/3" in shown and b"walking repositories" in shown
    assert done.stdout.splitlines()[0] == "kept 0 blobs and 0 manifests"
    assert done.stdout.splitlines()[1].startswith("removed 3 blobs (")
    assert done.stdout.splitlines()[2].startswith("took ")


def test_gc_without_a_terminal_prints_no_progress(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _store_with_orphans(root, 2)
    done = _gc(root)
    assert done.returncode == 0 and done.stderr == ""
    assert "removed 2 blobs" in done.stdout


def test_gc_while_another_replica_holds_the_lease_says_so_and_waits_with_wait(tmp_path: Path) -> None:
    root = tmp_path / "store"
    orphans = _store_with_orphans(root, 1)
    other = Lease(FilesystemDriver(root), "other-replica-1", ttl=600)
    assert other.acquire() is None

    refused = _gc(root)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("registry: not collected: collector other-replica-1 holds the lease until ")
    assert (root / "v1" / "blobs" / "sha256" / orphans[0][7:9] / orphans[0][7:] / "data").exists()

    threading.Timer(2.0, other.release).start()
    waited = _gc(root, "--wait")
    assert waited.returncode == 0, waited.stderr
    assert "removed 1 blobs" in waited.stdout


def test_serve_collects_every_gc_interval(tmp_path: Path) -> None:
    server = start_cargobay(tmp_path, config={"storage": {"filesystem": {"root": str(tmp_path / "data")}},
                                              "gc": {"interval": "1s", "grace": "1s"}})
    try:
        with httpx.Client(base_url=server.url) as client:
            data = b"pushed, never named by a manifest"
            digest = sha256(data)
            assert client.post("/v2/gc/lonely/blobs/uploads/", params={"digest": digest},
                               content=data).status_code == 201
            deadline = time.monotonic() + 60
            while client.head(f"/v2/gc/lonely/blobs/{digest}").status_code == 200:
                assert time.monotonic() < deadline, "registry serve never collected the unreferenced blob"
                time.sleep(0.5)
        assert "gc: kept" in server.log_path.read_text()
    finally:
        server.stop()
