"""`registry check [--repair]` run as a user runs it, beside a real `registry serve` on the same
root: a clean store exits 0; a layer with a byte flipped on disk and one deleted from disk are
named with repository and digest and exit 1; `--repair` removes only the corrupt blob and the
links to what is gone (the corrupt layer is then a 404 instead of bad bytes); the manifests stay
and are reported until the image is pushed again, after which the check is clean."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ocispec.digest import Digest
from storage import index_keys, paths
from tests.support.images import Image, simple_image
from tests.support.servers import RunningServer, start_cargobay

from .helpers import upload


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[RunningServer]:
    server = start_cargobay(tmp_path / "registry")
    yield server
    server.stop()


def _push(client: httpx.Client, repo: str, image: Image, tag: str) -> None:
    for blob in image.blobs():
        upload(client, repo, blob.data)
    r = client.put(f"/v2/{repo}/manifests/{tag}", content=image.manifest, headers={"Content-Type": image.media_type})
    assert r.status_code == 201, r.text


def _check(root: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "registry", "check", "--root", str(root), *flags],
                          capture_output=True, text=True, timeout=120)


def test_check_finds_repairs_only_what_is_broken_and_a_repush_heals(served: RunningServer) -> None:
    root = served.root
    assert root is not None
    rotten, partial = simple_image("cli-rotten"), simple_image("cli-partial")
    with httpx.Client(base_url=served.url, timeout=30) as client:
        _push(client, "c/app", rotten, "v1")
        _push(client, "c/app", partial, "v2")

        clean = _check(root)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        stored = sum(len(b.data) for b in (*rotten.blobs(), *partial.blobs()))
        stored += len(rotten.manifest) + len(partial.manifest)
        assert clean.stdout.strip().splitlines() == [f"checked 8 blobs ({stored} bytes), 2 manifests and 2 tags: clean"]

        bad, lost = Digest.parse(rotten.layers[0].digest), Digest.parse(partial.layers[1].digest)
        with open(root / paths.blob_data(bad), "r+b") as f:
            first = f.read(1)
            f.seek(0)
            f.write(bytes([first[0] ^ 0xFF]))
        (root / paths.blob_data(lost)).unlink()
        # Lost long ago: links younger than gc.grace are left alone (a push may be writing them).
        old = time.time() - 7200
        os.utime(root / paths.layer_link("c/app", lost), (old, old))

        found = _check(root)
        assert found.returncode == 1
        lines = found.stdout.splitlines()
        assert sum(line.startswith(f"corrupt blob {bad}") for line in lines) == 2  # in the store, in c/app
        assert f"missing blob {lost} in c/app: the repository links it, the store does not hold it" in lines
        assert any(line.startswith(f"missing blob {lost} in c/app: layers[1] of manifest") for line in lines)
        assert lines[-1].endswith(": 4 problems")
        assert (root / paths.blob_data(bad)).exists()  # nothing removed without --repair

        repaired = _check(root, "--repair")
        assert repaired.returncode == 1  # the manifests still name what is gone
        assert not (root / paths.blob_data(bad)).exists()
        assert sorted(line for line in repaired.stdout.splitlines() if line.startswith("repaired: ")) == sorted([
            f"repaired: removed the link of c/app to corrupt blob {bad}",
            f"repaired: removed the link of c/app to missing blob {lost}",
            f"repaired: removed corrupt blob {bad}",
        ])
        r = client.get(f"/v2/c/app/blobs/{bad}")
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
        for image, tag in ((rotten, "v1"), (partial, "v2")):  # manifests and tags untouched
            r = client.get(f"/v2/c/app/manifests/{tag}", headers={"Accept": image.media_type})
            assert r.status_code == 200 and r.content == image.manifest

        again = _check(root)
        assert again.returncode == 1
        assert sorted(again.stdout.splitlines()[:-1]) == sorted([
            f"missing blob {bad} in c/app: layers[0] of manifest {rotten.digest}: not in the store",
            f"missing blob {lost} in c/app: layers[1] of manifest {partial.digest}: not in the store",
        ])

        _push(client, "c/app", rotten, "v1")
        _push(client, "c/app", partial, "v2")
        healed = _check(root)
        assert healed.returncode == 0, healed.stdout
        assert healed.stdout.strip().endswith("2 manifests and 2 tags: clean")


def test_check_reports_a_listing_index_that_disagrees_and_repair_rebuilds_it(served: RunningServer) -> None:
    root = served.root
    assert root is not None
    image = simple_image("cli-index")
    with httpx.Client(base_url=served.url, timeout=30) as client:
        _push(client, "i/app", image, "v1")
        _push(client, "i/app", image, "v2")
        assert client.get("/v2/_catalog").json()["repositories"] == ["i/app"]  # the first listing builds it
        assert _check(root).returncode == 0
        # A marker lost (a crash between the tag's write and its marker's) and one nothing justifies.
        (root / index_keys.index_tag("i/app", "v2")).unlink()
        ghost = root / index_keys.index_repository("ghost/repo")
        ghost.parent.mkdir(parents=True)
        ghost.write_bytes(b"")
        assert client.get("/v2/i/app/tags/list").json()["tags"] == ["v1"]

        found = _check(root)
        assert found.returncode == 1
        assert found.stdout.splitlines()[:-1] == [
            "listing index names repository ghost/repo: listed, not in the tree",
            "listing index misses tag v2 in i/app: in the tree, not listed",
        ]
        repaired = _check(root, "--repair")
        assert "repaired: rebuilt the listing index: 1 entries added, 1 removed" in repaired.stdout.splitlines()
        assert _check(root).returncode == 0
        assert client.get("/v2/i/app/tags/list").json()["tags"] == ["v1", "v2"]
        assert client.get("/v2/_catalog").json()["repositories"] == ["i/app"]
