"""`puller fetch` and the store commands against real registries (Distribution and Cargobay)."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile

import httpx

from tests.support import images as im
from tests.support.images import push_image, push_index
from tests.support.servers import RunningServer
from tests.support.tools import require_tool

from .conftest import PullerRunner, verify_store


def mixed_image(seed: str, flavour: str = "oci") -> im.Image:
    compressions = ["gzip", "zstd", ""] if flavour == "oci" else ["gzip", ""]
    layers = [im.make_layer([im.Entry(f"{seed}{i}", "dir", mode=0o755), (f"{seed}{i}/f", f"{seed}-{i}".encode() * 500)],
                            comp, flavour) for i, comp in enumerate(compressions)]
    return im.build_image(layers, "linux/amd64", flavour)


def test_multi_layer_mixed_compression(registry: RunningServer, http: httpx.Client, puller: PullerRunner,
                                       repo: str) -> None:
    oci, docker = mixed_image("oci"), mixed_image("dock", "docker")
    push_image(http, registry.url, repo, oci, "oci")
    push_image(http, registry.url, repo, docker, "docker")
    for tag, image in (("oci", oci), ("docker", docker)):
        ref = f"{registry.hostport}/{repo}:{tag}"
        events = puller.events(puller.ok("--json", "fetch", "--plain-http", ref))
        assert events[-1]["event"] == "done" and events[-1]["digest"] == image.digest
        done = {e["digest"] for e in events if e["event"] == "blob-done"}
        assert done == {b.digest for b in image.blobs()}
    index = verify_store(puller.store)
    refs = {e["annotations"]["org.opencontainers.image.ref.name"]: e for e in index["manifests"]}
    assert refs[f"{registry.hostport}/{repo}:docker"]["mediaType"] == im.DOCKER_MANIFEST
    assert refs[f"{registry.hostport}/{repo}:oci"]["platform"] == {"architecture": "amd64", "os": "linux"}
    stored = puller.store / "blobs" / "sha256" / oci.digest.split(":")[1]
    assert stored.read_bytes() == oci.manifest  # exact bytes, never re-serialised

    info = json.loads(puller.ok("inspect", f"{registry.hostport}/{repo}:oci").stdout)
    assert info["digest"] == oci.digest and len(info["layers"]) == 3
    assert info["config"]["rootfs"]["diff_ids"] == [b.diff_id for b in oci.layers]
    rows = json.loads(puller.ok("images", "--json").stdout)
    assert {r["reference"] for r in rows} == set(refs)
    assert all(r["platform"] == "linux/amd64" and r["created"] == "2024-01-01T00:00:00Z" for r in rows)
    table = puller.ok("images").stdout
    assert table.splitlines()[0].split() == ["REFERENCE", "DIGEST", "PLATFORM", "SIZE", "CREATED"]

    # Other tools read the store as the OCI layout it is.
    skopeo = require_tool("skopeo")
    out = subprocess.run([skopeo, "inspect", f"oci:{puller.store}:{registry.hostport}/{repo}:oci"],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["Digest"] == oci.digest
    umoci = require_tool("umoci")
    listed = subprocess.run([umoci, "ls", "--layout", str(puller.store)], capture_output=True, text=True, check=True)
    assert f"{registry.hostport}/{repo}:oci" in listed.stdout.split()


def test_index_platform_selection(registry: RunningServer, http: httpx.Client, puller: PullerRunner, repo: str) -> None:
    amd = im.simple_image("amd", "linux/amd64")
    arm64 = im.simple_image("arm64", "linux/arm64/v8", compression="zstd")
    armv6 = im.simple_image("armv6", "linux/arm/v6")
    attestation = im.build_image([im.make_layer([("att.json", b"{}")])], "unknown/unknown")
    index = im.build_index([amd, arm64, armv6, attestation])
    push_index(http, registry.url, repo, index, "multi")
    docker_list = im.build_index([im.simple_image("d-amd", flavour="docker"),
                                  im.simple_image("d-arm", "linux/arm64", flavour="docker")], flavour="docker")
    push_index(http, registry.url, repo, docker_list, "dlist")
    ref = f"{registry.hostport}/{repo}:multi"

    puller.ok("fetch", "--plain-http", "--platform", "linux/amd64", ref)
    assert json.loads(puller.ok("inspect", ref).stdout)["digest"] == amd.digest
    # arm64 ≡ arm64/v8; arm/v7 falls back to the v6 image; resolved digest is the index's.
    puller.ok("fetch", "--plain-http", "--platform", "linux/arm64", ref)
    info = json.loads(puller.ok("inspect", ref).stdout)
    assert (info["digest"], info["resolved"], info["platform"]) == (arm64.digest, index.digest, "linux/arm64/v8")
    puller.ok("fetch", "--plain-http", "--platform", "linux/arm/v7", ref)
    assert json.loads(puller.ok("inspect", ref).stdout)["digest"] == armv6.digest
    # The attestation entry is never chosen; an absent platform is "not found" with what there is.
    missing = puller.run("fetch", "--plain-http", "--platform", "linux/s390x", ref)
    assert missing.returncode == 3
    assert "linux/s390x" in missing.stderr and "linux/amd64" in missing.stderr and "unknown" not in missing.stderr
    assert puller.run("fetch", "--plain-http", "--platform", "nonsense", ref).returncode == 2

    puller.ok("fetch", "--plain-http", "--platform", "linux/arm64", f"{registry.hostport}/{repo}:dlist")
    assert json.loads(puller.ok("inspect", f"{registry.hostport}/{repo}:dlist").stdout)["digest"] == \
        docker_list.images[1].digest
    verify_store(puller.store)


def test_a_stored_platform_serves_only_an_exact_request(upstream: RunningServer, http: httpx.Client,
                                                        puller: PullerRunner, repo: str) -> None:
    """The image stored for one platform is not "up to date" for another that could fall back to it
    (arm/v7 runs v6, but the index has a v7 image), and unpack/export fetch the platform they are
    asked for instead of using whatever is stored."""
    armv6, armv7 = im.simple_image("v6", "linux/arm/v6"), im.simple_image("v7", "linux/arm/v7")
    amd, arm64 = im.simple_image("amd", "linux/amd64"), im.simple_image("arm64", "linux/arm64")
    push_index(http, upstream.url, repo, im.build_index([armv6, armv7, amd, arm64]), "multi")
    ref = f"{upstream.hostport}/{repo}:multi"
    puller.ok("fetch", "--plain-http", "--platform", "linux/arm/v6", ref)
    assert "up to date" not in puller.ok("fetch", "--plain-http", "--platform", "linux/arm/v7", ref).stdout
    assert json.loads(puller.ok("inspect", ref).stdout)["digest"] == armv7.digest
    assert "up to date" in puller.ok("fetch", "--plain-http", "--platform", "linux/arm/v7", ref).stdout

    puller.ok("fetch", "--plain-http", "--platform", "linux/arm64", ref)
    rootfs = puller.home / "rootfs"
    puller.ok("unpack", "--plain-http", "--platform", "linux/amd64", ref, str(rootfs), "--keep-root-mode")
    assert sorted(os.listdir(rootfs / "layer0")) == ["amd.bin"]
    archive = puller.home / "arm64.tar"
    puller.ok("export", "--plain-http", "--platform", "linux/arm64", ref, str(archive))
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["digest"] == arm64.digest
    # Without --platform, what is stored serves (as `docker run` uses a pulled image).
    puller.ok("unpack", ref, str(puller.home / "stored"), "--keep-root-mode")
    assert sorted(os.listdir(puller.home / "stored" / "layer0")) == ["arm64.bin"]


def test_up_to_date_and_shared_layers(registry: RunningServer, http: httpx.Client, puller: PullerRunner,
                                      repo: str) -> None:
    base = [im.make_layer([("base/a", b"a" * 20000)]), im.make_layer([("base/b", b"b" * 20000)])]
    first = im.build_image(base)
    second = im.build_image([*base, im.make_layer([("app/c", b"c" * 5000)])])
    push_image(http, registry.url, repo, first, "app")
    ref = f"{registry.hostport}/{repo}:app"
    puller.ok("fetch", "--plain-http", ref)
    again = puller.ok("fetch", "--plain-http", ref)
    assert "up to date" in again.stdout
    events = puller.events(puller.ok("fetch", "--json", "--plain-http", ref))
    assert [e["event"] for e in events] == ["up-to-date"]

    # The tag moves: only the new layer (and config) download, the base layers are already there.
    push_image(http, registry.url, repo, second, "app")
    events = puller.events(puller.ok("fetch", "--json", "--plain-http", ref))
    assert {e["digest"] for e in events if e["event"] == "blob-exists"} == {b.digest for b in base}
    assert {e["digest"] for e in events if e["event"] == "blob-done"} == {second.config.digest, second.layers[2].digest}
    assert events[-1]["downloaded"] == second.config.size + second.layers[2].size

    # A missing blob makes the image incomplete: the next fetch repairs it instead of "up to date".
    (puller.store / "blobs" / "sha256" / second.layers[2].digest.split(":")[1]).unlink()
    events = puller.events(puller.ok("fetch", "--json", "--plain-http", ref))
    assert {e["digest"] for e in events if e["event"] == "blob-done"} == {second.layers[2].digest}
    verify_store(puller.store)


def test_digest_references(registry: RunningServer, http: httpx.Client, puller: PullerRunner, repo: str) -> None:
    image = im.simple_image("pinned")
    push_image(http, registry.url, repo, image, "pin")
    by_digest = f"{registry.hostport}/{repo}@{image.digest}"
    puller.ok("fetch", "--plain-http", by_digest)
    assert json.loads(puller.ok("inspect", by_digest).stdout)["reference"] == by_digest
    # name:tag@digest: the digest wins even when the tag names something else.
    push_image(http, registry.url, repo, im.simple_image("other"), "moved")
    both = f"{registry.hostport}/{repo}:moved@{image.digest}"
    puller.ok("fetch", "--plain-http", both)
    assert json.loads(puller.ok("inspect", both).stdout)["digest"] == image.digest
    # Pinned and complete: up to date without asking the registry.
    assert "up to date" in puller.ok("fetch", "--plain-http", both).stdout
    # A digest the registry does not have: not found.
    wrong = f"{registry.hostport}/{repo}@sha256:{'0' * 64}"
    result = puller.run("fetch", "--plain-http", wrong)
    assert result.returncode == 3 and result.stderr.startswith("puller: ") and len(result.stderr.splitlines()) == 1


def test_rm_and_prune(registry: RunningServer, http: httpx.Client, puller: PullerRunner, repo: str) -> None:
    shared = im.make_layer([("shared", b"s" * 3000)])
    one = im.build_image([shared, im.make_layer([("one", b"1" * 3000)])])
    two = im.build_image([shared, im.make_layer([("two", b"2" * 3000)])])
    push_image(http, registry.url, repo, one, "one")
    push_image(http, registry.url, repo, two, "two")
    puller.ok("fetch", "--plain-http", f"{registry.hostport}/{repo}:one")
    puller.ok("fetch", "--plain-http", f"{registry.hostport}/{repo}:two")
    blobs = puller.store / "blobs" / "sha256"
    assert "Untagged" in puller.ok("rm", f"{registry.hostport}/{repo}:one").stdout
    assert puller.run("inspect", f"{registry.hostport}/{repo}:one").returncode == 3
    assert puller.run("rm", f"{registry.hostport}/{repo}:one").returncode == 3
    assert (blobs / one.layers[1].digest.split(":")[1]).exists()  # blobs stay until prune
    pruned = json.loads(puller.ok("--json", "prune").stdout)
    assert pruned["deleted"] == 3  # one's manifest, config and own layer
    remaining = {p.name for p in blobs.iterdir()}
    assert remaining == {d.split(":")[1] for d in (two.digest, *(b.digest for b in two.blobs()))}
    verify_store(puller.store)
    # By digest prefix, like Docker's image IDs.
    puller.ok("rm", two.digest.split(":")[1][:12])
    assert json.loads(puller.ok("images", "--json").stdout) == []


def test_not_found_and_usage_exit_codes(registry: RunningServer, puller: PullerRunner, repo: str) -> None:
    result = puller.run("fetch", "--plain-http", f"{registry.hostport}/{repo}/nothing:here")
    assert result.returncode == 3 and len(result.stderr.strip().splitlines()) == 1
    assert puller.run("fetch", "Not/A/Reference").returncode == 2
    assert puller.run("inspect", "never-fetched").returncode == 3
