"""podman against a real Cargobay: images built by the tests are imported into a private vfs storage
(`podman pull oci:…`, `podman load` of an oci-archive), pushed (OCI and Docker schema 2), and pulled
back into another empty storage. podman re-serialises manifests, so what is compared is what must not
change: the digest podman reports equals the registry's, the config (= image ID) and every layer's
diff_id are the ones the test built, and the pulled rootfs holds the files that went in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.images import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    build_index,
    simple_image,
    write_oci_layout,
)
from tests.support.servers import RunningServer

from .clients import (
    Engine,
    Skopeo,
    engine_image,
    get_manifest,
    oci_archive,
    read_mounted_file,
    sha256_of,
    tar_files,
    verify_pushed_image,
)

Podmans = Callable[[str], Engine]


def seed_file(seed: str, layer: int = 0, size: int = 1024) -> bytes:
    """The content simple_image(seed) puts at layer<i>/<seed>.bin."""
    body = hashlib.sha256(f"{seed}/{layer}".encode()).digest() * (size // 32 + 1)
    return body[:size]


def test_push_and_pull_oci_image(cargobay: RunningServer, make_podman: Podmans, tmp_path: Path) -> None:
    image = simple_image("podman-oci", layer_count=2)
    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    pusher = make_podman("pusher")
    pusher("pull", f"oci:{layout}:v1")
    local = engine_image(pusher, image.config.digest[7:])
    assert "sha256:" + local["Id"] == image.config.digest

    ref = f"{cargobay.hostport}/podman/oci:v1"
    digestfile = tmp_path / "digest"
    pusher("push", "--tls-verify=false", "--digestfile", str(digestfile), image.config.digest[7:], f"docker://{ref}")

    pushed = verify_pushed_image(cargobay.url, "podman/oci", "v1")
    assert digestfile.read_text().strip() == sha256_of(pushed.raw)
    assert pushed.manifest["mediaType"] == OCI_MANIFEST
    assert pushed.config_digest == image.config.digest
    assert [sha256_of(t) for t in pushed.layers] == [layer.diff_id for layer in image.layers]

    puller = make_podman("puller")
    puller("pull", "--tls-verify=false", ref)
    pulled = engine_image(puller, ref)
    assert "sha256:" + pulled["Id"] == image.config.digest
    assert pulled["Digest"] == sha256_of(pushed.raw)
    assert f"{cargobay.hostport}/podman/oci@{sha256_of(pushed.raw)}" in pulled["RepoDigests"]
    for i in range(2):
        assert read_mounted_file(puller, ref, f"layer{i}/podman-oci.bin") == seed_file("podman-oci", i)

    # pulling by digest gives the same image
    puller("pull", "--tls-verify=false", f"{cargobay.hostport}/podman/oci@{sha256_of(pushed.raw)}")
    assert "sha256:" + engine_image(puller, f"{cargobay.hostport}/podman/oci@{sha256_of(pushed.raw)}")["Id"] == \
        image.config.digest


def test_load_archive_push_docker_format_and_pull(cargobay: RunningServer, make_podman: Podmans,
                                                  tmp_path: Path) -> None:
    image = simple_image("podman-v2s2", layer_count=3)
    archive = oci_archive(write_oci_layout(tmp_path / "layout", image, "v1"), tmp_path / "image.tar")
    pusher = make_podman("pusher")
    pusher("load", "-i", str(archive))
    assert "sha256:" + engine_image(pusher, image.config.digest[7:])["Id"] == image.config.digest

    ref = f"{cargobay.hostport}/podman/v2s2:v1"
    digestfile = tmp_path / "digest"
    pusher("push", "--tls-verify=false", "--format", "v2s2", "--digestfile", str(digestfile),
           image.config.digest[7:], f"docker://{ref}")

    pushed = verify_pushed_image(cargobay.url, "podman/v2s2", "v1")
    assert digestfile.read_text().strip() == sha256_of(pushed.raw)
    assert get_manifest(cargobay.url, "podman/v2s2", "v1").content_type == DOCKER_MANIFEST
    assert pushed.manifest["mediaType"] == DOCKER_MANIFEST
    assert pushed.manifest["config"]["mediaType"] == DOCKER_CONFIG
    # converting OCI → Docker keeps the layers' content; the config JSON is the same document
    assert [sha256_of(t) for t in pushed.layers] == [layer.diff_id for layer in image.layers]
    assert pushed.config["rootfs"] == json.loads(image.config.data)["rootfs"]

    puller = make_podman("puller")
    puller("pull", "--tls-verify=false", ref)
    pulled = engine_image(puller, ref)
    assert "sha256:" + pulled["Id"] == pushed.config_digest
    assert pulled["Digest"] == sha256_of(pushed.raw)
    assert read_mounted_file(puller, ref, "layer2/podman-v2s2.bin") == seed_file("podman-v2s2", 2)


def test_pull_zstd_image(cargobay: RunningServer, skopeo: Skopeo, make_podman: Podmans, tmp_path: Path) -> None:
    image = simple_image("podman-zstd", compression="zstd", layer_count=2)
    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    ref = f"{cargobay.hostport}/podman/zstd:v1"
    skopeo.copy(f"oci:{layout}:v1", f"docker://{ref}", "--preserve-digests")

    puller = make_podman("puller")
    puller("pull", "--tls-verify=false", ref)
    pulled = engine_image(puller, ref)
    assert "sha256:" + pulled["Id"] == image.config.digest
    assert pulled["Digest"] == image.digest
    assert read_mounted_file(puller, ref, "layer1/podman-zstd.bin") == seed_file("podman-zstd", 1)


@pytest.mark.parametrize("platform", ["linux/arm64/v8", "linux/arm/v7", "linux/amd64"])
def test_pull_one_platform_of_an_index(cargobay: RunningServer, skopeo: Skopeo, make_podman: Podmans,
                                       tmp_path: Path, platform: str) -> None:
    platforms = ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]
    index = build_index([simple_image(seed_of(p), p, layer_count=1) for p in platforms])
    ref = f"{cargobay.hostport}/podman/index:v1"
    if get_manifest_or_none(cargobay, "podman/index", "v1") != index.manifest:
        layout = write_oci_layout(tmp_path / "layout", index, "v1")
        skopeo.copy(f"oci:{layout}:v1", f"docker://{ref}", "--all", "--preserve-digests")

    wanted = index.images[platforms.index(platform)]
    puller = make_podman("puller")
    puller("pull", "--tls-verify=false", "--platform", platform, ref)
    pulled = engine_image(puller, ref)
    assert "sha256:" + pulled["Id"] == wanted.config.digest
    assert pulled["Architecture"] == wanted.platform["architecture"]
    assert pulled["Digest"] == index.digest
    assert f"{cargobay.hostport}/podman/index@{wanted.digest}" in pulled["RepoDigests"]
    seed = seed_of(platform)
    assert read_mounted_file(puller, ref, f"layer0/{seed}.bin") == seed_file(seed, 0)


def seed_of(platform: str) -> str:
    return "podman-index-" + platform.replace("/", "-")


def get_manifest_or_none(server: RunningServer, repo: str, reference: str) -> bytes | None:
    r = httpx.get(f"{server.url}/v2/{repo}/manifests/{reference}",
                  headers={"Accept": "application/vnd.oci.image.index.v1+json"}, timeout=30)
    return r.content if r.status_code == 200 else None


def test_uncompressed_layers_are_compressed_on_push(cargobay: RunningServer, make_podman: Podmans,
                                                 tmp_path: Path) -> None:
    """An uncompressed-layer image: podman compresses it on push; the registry must hold gzip blobs whose
    content is the original tar, file for file."""
    image = simple_image("podman-plain", compression="", layer_count=1)
    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    pusher = make_podman("pusher")
    pusher("pull", f"oci:{layout}:v1")
    pusher("push", "--tls-verify=false", image.config.digest[7:], f"docker://{cargobay.hostport}/podman/plain:v1")

    pushed = verify_pushed_image(cargobay.url, "podman/plain", "v1")
    assert pushed.manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert tar_files(pushed.layers[0]) == {"layer0/podman-plain.bin": seed_file("podman-plain", 0)}


def test_push_with_zstd_compression(cargobay: RunningServer, make_podman: Podmans, tmp_path: Path) -> None:
    image = simple_image("podman-zstd-push", compression="", layer_count=2)  # never pushed gzip: nothing to reuse
    pusher = make_podman("pusher")
    pusher("pull", f"oci:{write_oci_layout(tmp_path / 'layout', image, 'v1')}:v1")
    ref = f"{cargobay.hostport}/podman/zstd-push:v1"
    digestfile = tmp_path / "digest"
    pusher("push", "--tls-verify=false", "--compression-format", "zstd", "--digestfile", str(digestfile),
           image.config.digest[7:], f"docker://{ref}")

    pushed = verify_pushed_image(cargobay.url, "podman/zstd-push", "v1")
    assert sha256_of(pushed.raw) == digestfile.read_text().strip()
    assert {d["mediaType"] for d in pushed.manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    assert pushed.config_digest == image.config.digest

    puller = make_podman("puller")
    puller("pull", "--tls-verify=false", ref)
    assert read_mounted_file(puller, ref, "layer1/podman-zstd-push.bin") == seed_file("podman-zstd-push", 1)
