"""buildah against a real Cargobay: build an image from scratch (`buildah copy` and `buildah add` of
files, a config), commit it, `buildah push` it (OCI, Docker schema 2, zstd layers), then check with skopeo
and by fetching every blob through the API and hashing it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.images import DOCKER_MANIFEST, OCI_MANIFEST
from tests.support.servers import RunningServer

from .clients import Engine, Skopeo, get_manifest, sha256_of, tar_files, verify_pushed_image

Buildahs = Callable[[str], Engine]


def build(buildah: Engine, tmp_path: Path, seed: str, fmt: str) -> tuple[str, dict[str, bytes]]:
    """A one-layer image holding two files; returns its image ID and the files it holds."""
    files = {"hello.txt": f"hello from {seed}\n".encode(), "data/blob.bin": bytes(range(256)) * 64 + seed.encode()}
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    for name, data in files.items():
        (src / name).write_bytes(data)
    container = buildah("from", "--pull=never", "scratch").stdout.strip()
    buildah("copy", container, str(src / "hello.txt"), "/hello.txt")
    buildah("add", container, str(src / "data"), "/data")
    buildah("config", "--cmd", '["/hello"]', "--env", f"SEED={seed}", "--label", f"seed={seed}", container)
    image_id = buildah("commit", "--format", fmt, "--rm", container, f"localhost/{seed}:built").stdout.strip()
    return image_id.removeprefix("sha256:"), files


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_build_and_push(cargobay: RunningServer, skopeo: Skopeo, make_buildah: Buildahs, tmp_path: Path,
                        fmt: str) -> None:
    buildah = make_buildah("builder")
    seed = f"buildah-{fmt}"
    image_id, files = build(buildah, tmp_path, seed, fmt)
    repo = f"buildah/{fmt}"
    ref = f"docker://{cargobay.hostport}/{repo}:v1"
    digestfile = tmp_path / "digest"

    buildah("push", "--tls-verify=false", "--digestfile", str(digestfile), f"localhost/{seed}:built", ref)

    digest = digestfile.read_text().strip()
    raw = skopeo.inspect_raw(ref)
    assert sha256_of(raw) == digest
    info = skopeo.inspect(ref)
    assert info["Digest"] == digest
    assert info["Labels"]["seed"] == seed
    fetched = get_manifest(cargobay.url, repo, "v1")
    assert fetched.body == raw and fetched.digest_header == digest
    assert fetched.content_type == (OCI_MANIFEST if fmt == "oci" else DOCKER_MANIFEST)
    assert get_manifest(cargobay.url, repo, digest).body == raw

    pushed = verify_pushed_image(cargobay.url, repo, "v1")
    assert pushed.config_digest == "sha256:" + image_id  # the image buildah committed, unchanged
    assert f"SEED={seed}" in pushed.config["config"]["Env"]
    assert sha256_of(skopeo.inspect_raw(ref, "--config")) == pushed.config_digest
    assert len(pushed.layers) == 1
    assert tar_files(pushed.layers[0]) == files


def test_push_zstd_layers(cargobay: RunningServer, skopeo: Skopeo, make_buildah: Buildahs, make_podman,
                          tmp_path: Path) -> None:
    buildah = make_buildah("builder")
    seed = "buildah-zstd"  # content no other test pushes, so buildah cannot reuse a gzip blob instead
    image_id, files = build(buildah, tmp_path, seed, "oci")
    ref = f"{cargobay.hostport}/buildah/zstd:v1"
    digestfile = tmp_path / "digest"

    buildah("push", "--tls-verify=false", "--compression-format", "zstd", "--digestfile", str(digestfile),
            f"localhost/{seed}:built", f"docker://{ref}")

    pushed = verify_pushed_image(cargobay.url, "buildah/zstd", "v1")
    assert sha256_of(pushed.raw) == digestfile.read_text().strip()
    assert [d["mediaType"] for d in pushed.manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar+zstd"]
    assert pushed.config_digest == "sha256:" + image_id
    assert tar_files(pushed.layers[0]) == files

    # and a client can pull and unpack it
    puller = make_podman("puller")
    puller("pull", "--tls-verify=false", ref)
    assert puller("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip() == image_id
