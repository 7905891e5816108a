"""skopeo against a real Cargobay: copy in and out (OCI and Docker schema 2, gzip/zstd/uncompressed
layers, multi-platform indexes with --all), inspect, list-tags (paginated), delete, and copies between
repositories of the same registry (cross-repository mounts). Every round trip compares digests and bytes.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.support.images import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    Entry,
    build_image,
    build_index,
    canonical_json,
    make_layer,
    push_image,
    push_manifest,
    simple_image,
    write_oci_layout,
)
from tests.support.servers import RunningServer, start_cargobay

from .clients import (
    Skopeo,
    dir_layout_contents,
    expected_blobs,
    get_blob,
    get_manifest,
    manifest_status,
    oci_layout_contents,
    sha256_of,
    write_dir_layout,
)
from .conftest import PAGE_SIZE


def assert_served(server: RunningServer, repo: str, reference: str, body: bytes, media_type: str) -> None:
    fetched = get_manifest(server.url, repo, reference)
    assert fetched.body == body, "registry does not serve the pushed manifest byte for byte"
    assert fetched.content_type == media_type
    assert fetched.digest_header == sha256_of(body)


@pytest.mark.parametrize("compression", ["gzip", "zstd", ""], ids=["gzip", "zstd", "uncompressed"])
def test_copy_oci_image_in_inspect_and_out(cargobay: RunningServer, skopeo: Skopeo, tmp_path: Path,
                                           compression: str) -> None:
    image = simple_image(f"skopeo-oci-{compression}", compression=compression, layer_count=3)
    layout = write_oci_layout(tmp_path / "in", image, "v1")
    repo = f"skopeo/oci-{compression or 'plain'}"
    dest = f"docker://{cargobay.hostport}/{repo}:v1"

    skopeo.copy(f"oci:{layout}:v1", dest, "--preserve-digests")

    # the registry has exactly the manifest of the layout, and each blob
    assert_served(cargobay, repo, "v1", image.manifest, OCI_MANIFEST)
    assert_served(cargobay, repo, image.digest, image.manifest, OCI_MANIFEST)
    for blob in image.blobs():
        assert get_blob(cargobay.url, repo, blob.digest) == blob.data

    # inspect: raw (by tag and by digest), the config, and the parsed view
    assert skopeo.inspect_raw(dest) == image.manifest
    assert skopeo.inspect_raw(f"docker://{cargobay.hostport}/{repo}@{image.digest}") == image.manifest
    assert skopeo.inspect_raw(dest, "--config") == image.config.data
    info = skopeo.inspect(dest)
    assert info["Digest"] == image.digest
    assert info["Layers"] == [layer.digest for layer in image.layers]
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")
    assert info["RepoTags"] == ["v1"]

    # and back out into a fresh OCI layout: same manifest digest, every blob byte-identical
    out = tmp_path / "out"
    flags = ["--preserve-digests"] + (["--dest-oci-accept-uncompressed-layers"] if compression == "" else [])
    skopeo.copy(dest, f"oci:{out}:back", *flags)
    descriptors, blobs = oci_layout_contents(out)
    assert [(d["digest"], d["mediaType"], d["size"]) for d in descriptors] == [
        (image.digest, OCI_MANIFEST, len(image.manifest))]
    assert blobs == expected_blobs(image)


def test_copy_docker_schema2_image_in_and_out(cargobay: RunningServer, skopeo: Skopeo, tmp_path: Path) -> None:
    image = simple_image("skopeo-docker", flavour="docker")
    source = write_dir_layout(tmp_path / "in", image)
    dest = f"docker://{cargobay.hostport}/skopeo/docker:v1"

    skopeo.copy(f"dir:{source}", dest, "--preserve-digests")

    assert_served(cargobay, "skopeo/docker", "v1", image.manifest, DOCKER_MANIFEST)
    assert skopeo.inspect_raw(dest) == image.manifest
    assert skopeo.inspect(dest)["Digest"] == image.digest
    assert skopeo.inspect_raw(dest, "--config") == image.config.data

    out = tmp_path / "out"
    skopeo.copy(dest, f"dir:{out}", "--preserve-digests")
    assert (out / "manifest.json").read_bytes() == image.manifest
    assert dir_layout_contents(out) == expected_blobs(image)


def _multi_platform(flavour: str, seed: str):
    return build_index([simple_image(f"{seed}-amd64", "linux/amd64", flavour=flavour),
                        simple_image(f"{seed}-arm64", "linux/arm64/v8", flavour=flavour),
                        simple_image(f"{seed}-armv7", "linux/arm/v7", flavour=flavour, compression="gzip")],
                       flavour=flavour)


def test_copy_all_oci_index_in_and_out(cargobay: RunningServer, skopeo: Skopeo, tmp_path: Path) -> None:
    index = _multi_platform("oci", "skopeo-index")
    layout = write_oci_layout(tmp_path / "in", index, "v1")
    repo = "skopeo/index"
    dest = f"docker://{cargobay.hostport}/{repo}:v1"

    skopeo.copy(f"oci:{layout}:v1", dest, "--all", "--preserve-digests")

    assert_served(cargobay, repo, "v1", index.manifest, OCI_INDEX)
    assert skopeo.inspect_raw(dest) == index.manifest
    for image in index.images:
        assert_served(cargobay, repo, image.digest, image.manifest, OCI_MANIFEST)
        for blob in image.blobs():
            assert get_blob(cargobay.url, repo, blob.digest) == blob.data
        by_digest = f"docker://{cargobay.hostport}/{repo}@{image.digest}"
        assert skopeo.inspect_raw(by_digest) == image.manifest
    # the parsed view picks the platform asked for
    arm64 = index.images[1]
    info = skopeo.inspect(dest, "--override-arch", "arm64", "--override-variant", "v8")
    assert info["Layers"] == [layer.digest for layer in arm64.layers]
    assert info["Architecture"] == "arm64"
    assert skopeo.inspect_raw(dest, "--config", "--override-arch", "arm64", "--override-variant", "v8") == \
        arm64.config.data

    out = tmp_path / "out"
    skopeo.copy(dest, f"oci:{out}:back", "--all", "--preserve-digests")
    descriptors, blobs = oci_layout_contents(out)
    assert [d["digest"] for d in descriptors] == [index.digest]
    assert blobs == expected_blobs(index)


def test_copy_all_docker_manifest_list_in_and_out(cargobay: RunningServer, skopeo: Skopeo, tmp_path: Path) -> None:
    index = _multi_platform("docker", "skopeo-list")
    source = write_dir_layout(tmp_path / "in", index)
    repo = "skopeo/list"
    dest = f"docker://{cargobay.hostport}/{repo}:v1"

    skopeo.copy(f"dir:{source}", dest, "--all", "--preserve-digests")

    assert_served(cargobay, repo, "v1", index.manifest, DOCKER_LIST)
    for image in index.images:
        assert_served(cargobay, repo, image.digest, image.manifest, DOCKER_MANIFEST)
    out = tmp_path / "out"
    skopeo.copy(dest, f"dir:{out}", "--all", "--preserve-digests")
    assert (out / "manifest.json").read_bytes() == index.manifest
    assert dir_layout_contents(out) == expected_blobs(index)


def test_copy_index_only_is_refused_when_children_are_missing(cargobay: RunningServer, skopeo: Skopeo,
                                                             tmp_path: Path) -> None:
    """`--multi-arch index-only` pushes the index without its images: the registry must refuse it."""
    index = _multi_platform("oci", "skopeo-index-only")
    layout = write_oci_layout(tmp_path / "in", index, "v1")
    proc = skopeo.copy(f"oci:{layout}:v1", f"docker://{cargobay.hostport}/skopeo/index-only:v1",
                       "--multi-arch", "index-only", check=False)
    assert proc.returncode != 0
    assert "manifest blob unknown" in proc.stderr.lower()
    assert manifest_status(cargobay.url, "skopeo/index-only", "v1") == 404
    assert manifest_status(cargobay.url, "skopeo/index-only", index.digest) == 404


def test_list_tags_follows_pagination(cargobay: RunningServer, skopeo: Skopeo) -> None:
    image = simple_image("skopeo-tags", layer_count=1)
    repo = "skopeo/tags"
    tags = [f"t{i:02d}" for i in range(2 * PAGE_SIZE + 2)] + ["latest", "v1.0", "V2_x"]
    with httpx.Client(timeout=30) as client:
        push_image(client, cargobay.url, repo, image)
        for tag in reversed(tags):
            push_manifest(client, cargobay.url, repo, tag, image.manifest, image.media_type)
        first = client.get(f"{cargobay.url}/v2/{repo}/tags/list")
    # the server really does cut the list, so skopeo has to follow Link
    assert len(first.json()["tags"]) == PAGE_SIZE and 'rel="next"' in first.headers.get("link", "")

    assert skopeo.list_tags(f"docker://{cargobay.hostport}/{repo}") == sorted(tags)


def test_delete_by_tag_and_by_digest(cargobay: RunningServer, skopeo: Skopeo, tmp_path: Path) -> None:
    keep = simple_image("skopeo-delete-keep", layer_count=1)
    gone = simple_image("skopeo-delete-gone", layer_count=1)
    gone2 = simple_image("skopeo-delete-gone2", layer_count=1)
    repo = "skopeo/delete"
    base = f"docker://{cargobay.hostport}/{repo}"
    for image, tags in ((keep, ["keep"]), (gone, ["a", "b"]), (gone2, ["c"])):
        layout = write_oci_layout(tmp_path / image.digest[7:19], image, "x")
        for tag in tags:
            skopeo.copy(f"oci:{layout}:x", f"{base}:{tag}", "--preserve-digests")
    assert skopeo.list_tags(base) == ["a", "b", "c", "keep"]

    # skopeo resolves the tag and deletes the manifest by digest: every tag naming it goes too
    skopeo.delete(f"{base}:a")
    assert manifest_status(cargobay.url, repo, gone.digest) == 404
    assert manifest_status(cargobay.url, repo, "a") == 404
    assert manifest_status(cargobay.url, repo, "b") == 404
    proc = skopeo("inspect", "--tls-verify=false", "--raw", f"{base}:b", check=False)
    assert proc.returncode != 0 and "manifest unknown" in proc.stderr.lower()

    skopeo.delete(f"{base}@{gone2.digest}")
    assert manifest_status(cargobay.url, repo, "c") == 404
    assert skopeo.list_tags(base) == ["keep"]

    # the other image is untouched, and blobs are only removed by garbage collection
    assert skopeo.inspect_raw(f"{base}:keep") == keep.manifest
    for blob in gone.blobs():
        assert get_blob(cargobay.url, repo, blob.digest) == blob.data

    # deleting what is already gone fails cleanly
    proc = skopeo.delete(f"{base}@{gone.digest}", check=False)
    assert proc.returncode != 0 and "may not exist" in proc.stderr.lower(), proc.stderr


def test_delete_refused_when_disabled(skopeo: Skopeo, tmp_path: Path) -> None:
    server = start_cargobay(tmp_path / "no-delete")  # storage.delete.enabled defaults to false
    try:
        image = simple_image("skopeo-no-delete", layer_count=1)
        layout = write_oci_layout(tmp_path / "in", image, "x")
        ref = f"docker://{server.hostport}/skopeo/no-delete:v1"
        skopeo.copy(f"oci:{layout}:x", ref, "--preserve-digests")
        proc = skopeo.delete(ref, check=False)
        assert proc.returncode != 0
        assert "unsupported" in proc.stderr.lower() or "405" in proc.stderr, proc.stderr
        assert skopeo.inspect_raw(ref) == image.manifest
    finally:
        server.stop()


def test_copy_between_repositories_mounts_blobs(cargobay: RunningServer, skopeo: Skopeo, tmp_path: Path) -> None:
    """skopeo copies repo → repo on one registry by mounting layers (`POST ?mount=&from=` → 201)."""
    index = _multi_platform("oci", "skopeo-mount")
    layout = write_oci_layout(tmp_path / "in", index, "v1")
    source, target = "skopeo/mount-src", "skopeo/mount-dst"
    src_ref, dst_ref = (f"docker://{cargobay.hostport}/{r}:v1" for r in (source, target))
    skopeo.copy(f"oci:{layout}:v1", src_ref, "--all", "--preserve-digests")

    skopeo.copy(src_ref, dst_ref, "--all", "--preserve-digests")

    assert skopeo.inspect_raw(dst_ref) == index.manifest
    assert_served(cargobay, target, "v1", index.manifest, OCI_INDEX)
    for image in index.images:
        assert_served(cargobay, target, image.digest, image.manifest, OCI_MANIFEST)
        for blob in image.blobs():
            assert get_blob(cargobay.url, target, blob.digest) == blob.data
    # the layers came by mount, not by upload
    log = cargobay.log()
    for image in index.images:
        for layer in image.layers:
            mount = re.compile(
                rf'"POST /v2/{re.escape(target)}/blobs/uploads/\?[^"]*mount={re.escape(quote(layer.digest, safe=""))}'
                rf'[^"]*" 201')
            mount_from = f"from={quote(source, safe='')}"
            lines = [line for line in log.splitlines() if mount.search(line)]
            assert lines and all(mount_from in line for line in lines), \
                f"layer {layer.digest} was not mounted from {source}"
    layer_digests = "|".join(re.escape(quote(layer.digest, safe="")) for i in index.images for layer in i.layers)
    assert not re.search(rf'"PUT /v2/{re.escape(target)}/blobs/uploads/[^"]*digest='
                         rf'({layer_digests})',
                         log), "a layer was uploaded instead of mounted"

    # deleting the target's index removes only that index: not its images, not the source's copy
    skopeo.delete(dst_ref)
    assert manifest_status(cargobay.url, target, index.digest) == 404
    for image in index.images:
        assert_served(cargobay, target, image.digest, image.manifest, OCI_MANIFEST)
    assert skopeo.inspect_raw(src_ref) == index.manifest


@pytest.mark.parametrize("repo", ["a", "deep/er/path/of/names", "with.dots/and_underscores/and--dashes", "x0/1-2/y__z"])
def test_repository_names(cargobay: RunningServer, skopeo: Skopeo, tmp_path: Path, repo: str) -> None:
    image = simple_image("skopeo-names", layer_count=1)
    layout = write_oci_layout(tmp_path / "in", image, "v1")
    ref = f"docker://{cargobay.hostport}/names/{repo}:v1"
    skopeo.copy(f"oci:{layout}:v1", ref, "--preserve-digests")
    assert skopeo.inspect_raw(ref) == image.manifest
    assert skopeo.list_tags(ref.rsplit(":", 1)[0]) == ["v1"]
    out = tmp_path / "out"
    skopeo.copy(ref, f"oci:{out}:v1", "--preserve-digests")
    assert oci_layout_contents(out)[1] == expected_blobs(image)


def test_copy_large_layers(cargobay: RunningServer, skopeo: Skopeo, tmp_path: Path) -> None:
    """Layers of several MiB (incompressible) go through streamed uploads and downloads intact."""
    rng = random.Random(20240101)
    layers = [make_layer([Entry("big", "dir", mode=0o755), (f"big/{i}.bin", rng.randbytes(size))], compression)
              for i, (size, compression) in enumerate([(24 << 20, ""), (9 << 20, "gzip"), (5 << 20 | 12345, "")])]
    image = build_image(layers)
    layout = write_oci_layout(tmp_path / "in", image, "v1")
    ref = f"docker://{cargobay.hostport}/skopeo/large:v1"

    skopeo.copy(f"oci:{layout}:v1", ref, "--preserve-digests")

    assert skopeo.inspect_raw(ref) == image.manifest
    out = tmp_path / "out"
    skopeo.copy(ref, f"oci:{out}:v1", "--preserve-digests", "--dest-oci-accept-uncompressed-layers")
    assert oci_layout_contents(out)[1] == expected_blobs(image)


def test_concurrent_pushes_of_the_same_image(cargobay: RunningServer, skopeo: Skopeo, tmp_path: Path) -> None:
    """Several skopeo processes push the same blobs and the same tag at once: all succeed, one result."""
    image = simple_image("skopeo-concurrent", layer_count=4, layer_size=256 << 10)
    layout = write_oci_layout(tmp_path / "in", image, "v1")
    repo = "skopeo/concurrent"
    procs = [subprocess.Popen([skopeo.binary, "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
                               f"oci:{layout}:v1", f"docker://{cargobay.hostport}/{repo}:{tag}"],
                              env=skopeo.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tag in ["same", "same", "same", "same", "other1", "other2"]]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    for p in procs:
        p.stdout.close()  # type: ignore[union-attr]
        p.stderr.close()  # type: ignore[union-attr]
    assert [rc for rc, _ in results] == [0] * len(procs), results

    assert skopeo.list_tags(f"docker://{cargobay.hostport}/{repo}") == ["other1", "other2", "same"]
    for tag in ("same", "other1", "other2"):
        assert_served(cargobay, repo, tag, image.manifest, OCI_MANIFEST)
    for blob in image.blobs():
        assert get_blob(cargobay.url, repo, blob.digest) == blob.data


def test_copy_artifact_with_subject_shows_in_referrers(cargobay: RunningServer, skopeo: Skopeo,
                                                        tmp_path: Path) -> None:
    """An artifact (artifactType, empty config, `subject`) goes in and out by skopeo unchanged, and the
    registry lists it as a referrer of its subject."""
    base = simple_image("skopeo-artifact-base", layer_count=1)
    empty = Blob.of("application/vnd.oci.empty.v1+json", b"{}")
    payload = Blob.of("application/vnd.example.signature", b"signature bytes")
    raw = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": empty.descriptor(), "layers": [payload.descriptor()], "subject": base.descriptor(),
        "annotations": {"org.example.kind": "signature"}})
    digest = sha256_of(raw)
    layout = tmp_path / "artifact"
    blobs_dir = layout / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True)
    for name, data in ((empty.digest, empty.data), (payload.digest, payload.data), (digest, raw)):
        (blobs_dir / name[7:]).write_bytes(data)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": digest, "size": len(raw),
        "annotations": {"org.opencontainers.image.ref.name": "sig"}}]}))
    repo = "skopeo/artifact"
    base_ref = f"docker://{cargobay.hostport}/{repo}:base"
    sig_ref = f"docker://{cargobay.hostport}/{repo}:sig"

    skopeo.copy(f"oci:{write_oci_layout(tmp_path / 'base', base, 'v1')}:v1", base_ref, "--preserve-digests")
    skopeo.copy(f"oci:{layout}:sig", sig_ref, "--preserve-digests")

    assert_served(cargobay, repo, "sig", raw, OCI_MANIFEST)
    assert skopeo.inspect_raw(sig_ref) == raw
    referrers = httpx.get(f"{cargobay.url}/v2/{repo}/referrers/{base.digest}", timeout=30)
    assert referrers.status_code == 200
    assert referrers.headers["content-type"] == OCI_INDEX
    assert referrers.json()["manifests"] == [{
        "mediaType": OCI_MANIFEST, "digest": digest, "size": len(raw),
        "artifactType": "application/vnd.example.sig", "annotations": {"org.example.kind": "signature"}}]

    out = tmp_path / "out"
    skopeo.copy(sig_ref, f"oci:{out}:sig", "--preserve-digests")
    descriptors, blobs = oci_layout_contents(out)
    assert [d["digest"] for d in descriptors] == [digest]
    assert blobs == {digest: raw, empty.digest: empty.data, payload.digest: payload.data}
