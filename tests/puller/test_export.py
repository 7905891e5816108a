"""puller.export: both archive formats read back by skopeo, an independent implementation."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import BinaryIO

import pytest

from ocispec.digest import Digest
from ocispec.manifest import ImageManifest, parse_manifest
from puller.assemble import export_image, unpack_image
from puller.errors import UsageError, VerificationError
from tests.puller.test_unpack import Layout, d, f, link, snapshot
from tests.support.images import Entry, Image, build_image, make_layer
from tests.support.tools import require_tool

REFERENCE = "registry.example:5000/team/app:1.0"


def image(compression: str = "gzip", flavour: str = "oci") -> Image:
    layers = [
        make_layer([d("etc"), f("etc/os-release", b"ID=test\n"), link("etc/link", "os-release"),
                    f("bin-file", os.urandom(300_000), mode=0o755)], compression, flavour),
        make_layer([f(".wh.bin-file"), d("app"), f("app/main", b"print('hi')\n"),
                    Entry("app/fifo", "fifo", mode=0o600)], compression if compression != "zstd" else "", flavour),
        make_layer([f("app/main", b"print('v2')\n")], compression, flavour),
    ]
    return build_image(layers, flavour=flavour, config_extra={
        "config": {"Cmd": ["/app/main"], "Env": ["A=1"], "Labels": {"x": "y"}}})


def skopeo(*args: str) -> str:
    tool = require_tool("skopeo")
    result = subprocess.run([tool, "--insecure-policy", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"skopeo {' '.join(args)}: {result.stderr}"
    return result.stdout


def export(layout: Layout, out: Path, fmt: str, reference: str = REFERENCE) -> Path:
    export_image(reference, layout.image.manifest, layout.manifest, layout.config_raw, layout.open_blob, out, fmt)
    return out


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


class LayoutDir:
    """Any OCI layout directory (as skopeo wrote it) read the way unpack_image wants."""

    def __init__(self, root: Path) -> None:
        self.root = root
        index = json.loads((root / "index.json").read_text())
        (entry,) = index["manifests"]
        self.manifest_raw = self.read(Digest.parse(entry["digest"]))
        self.manifest: ImageManifest = parse_manifest(self.manifest_raw)  # type: ignore[assignment]
        self.config_raw = self.read(self.manifest.config.digest)

    def read(self, digest: Digest) -> bytes:
        return (self.root / "blobs" / digest.algorithm / digest.hex).read_bytes()

    def open_blob(self, digest: Digest) -> BinaryIO:
        return open(self.root / "blobs" / digest.algorithm / digest.hex, "rb")

    def unpack(self, dest: Path) -> None:
        unpack_image(self.manifest, self.config_raw, self.open_blob, dest, max_unpacked_bytes=1 << 30, warn=print,
                     keep_root_mode=True)


@pytest.mark.parametrize("compression", ["gzip", "zstd", ""])
def test_oci_archive_is_the_image_unchanged_and_skopeo_reads_it(tmp_path: Path, compression: str) -> None:
    img = image(compression)
    layout = Layout(tmp_path / "layout", img)
    archive = export(layout, tmp_path / "image.oci.tar", "oci-archive")

    files = members(archive)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    (entry,) = index["manifests"]
    assert entry["digest"] == img.digest and entry["mediaType"] == img.media_type
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == REFERENCE
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    for blob in img.blobs():
        assert files[f"blobs/sha256/{blob.digest.split(':')[1]}"] == blob.data

    assert skopeo("inspect", "--raw", f"oci-archive:{archive}").encode() == img.manifest
    assert json.loads(skopeo("inspect", f"oci-archive:{archive}"))["Digest"] == img.digest
    assert json.loads(skopeo("inspect", "--config", f"oci-archive:{archive}")) == json.loads(img.config.data)
    copied = tmp_path / "copied"
    skopeo("copy", "--preserve-digests", f"oci-archive:{archive}", f"oci:{copied}:latest")
    assert LayoutDir(copied).manifest_raw == img.manifest


def test_oci_archive_of_a_docker_manifest(tmp_path: Path) -> None:
    img = image("gzip", flavour="docker")
    archive = export(Layout(tmp_path / "layout", img), tmp_path / "image.tar", "oci-archive")
    assert skopeo("inspect", "--raw", f"oci-archive:{archive}").encode() == img.manifest
    assert json.loads(skopeo("inspect", f"oci-archive:{archive}"))["Digest"] == img.digest


@pytest.mark.parametrize("compression,flavour", [("gzip", "oci"), ("zstd", "oci"), ("", "oci"), ("gzip", "docker")])
def test_docker_archive_reads_back_with_skopeo_and_unpacks_the_same(tmp_path: Path, compression: str,
                                                                    flavour: str) -> None:
    img = image(compression, flavour)
    layout = Layout(tmp_path / "layout", img)
    archive = export(layout, tmp_path / "image.docker.tar", "docker-archive")
    diff_ids = json.loads(img.config.data)["rootfs"]["diff_ids"]

    inspected = json.loads(skopeo("inspect", f"docker-archive:{archive}"))
    assert inspected["Layers"] == diff_ids
    assert inspected["Labels"] == {"x": "y"}
    assert json.loads(skopeo("inspect", "--config", f"docker-archive:{archive}")) == json.loads(img.config.data)
    # RepoTags names the image: skopeo can pick it by that name
    skopeo("inspect", f"docker-archive:{archive}:{REFERENCE}")

    copied = tmp_path / "copied"
    skopeo("copy", f"docker-archive:{archive}", f"oci:{copied}:latest")
    ours, theirs = tmp_path / "direct", tmp_path / "via-docker-archive"
    layout.unpack(ours)
    LayoutDir(copied).unpack(theirs)
    assert snapshot(ours) == snapshot(theirs)


def test_docker_archive_has_the_layout_docker_save_writes(tmp_path: Path) -> None:
    img = image("zstd")
    archive = export(Layout(tmp_path / "layout", img), tmp_path / "image.tar", "docker-archive")
    files = members(archive)
    config = json.loads(img.config.data)

    (entry,) = json.loads(files["manifest.json"])
    assert entry["RepoTags"] == [REFERENCE]
    assert entry["Config"] == f"blobs/sha256/{img.config.digest.split(':')[1]}"
    assert files[entry["Config"]] == img.config.data
    assert entry["Layers"] == [f"blobs/sha256/{d.split(':')[1]}" for d in config["rootfs"]["diff_ids"]]
    for path, diff_id in zip(entry["Layers"], config["rootfs"]["diff_ids"], strict=True):
        assert "sha256:" + hashlib.sha256(files[path]).hexdigest() == diff_id  # uncompressed tars

    # ... and it is also an OCI layout whose manifest lists those same uncompressed layers
    (desc,) = json.loads(files["index.json"])["manifests"]
    assert desc["annotations"] == {"io.containerd.image.name": REFERENCE, "org.opencontainers.image.ref.name": "1.0"}
    manifest = json.loads(files[f"blobs/sha256/{desc['digest'].split(':')[1]}"])
    assert [layer["digest"] for layer in manifest["layers"]] == config["rootfs"]["diff_ids"]
    assert [layer["size"] for layer in manifest["layers"]] == [len(files[p]) for p in entry["Layers"]]
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar"}
    assert json.loads(skopeo("inspect", f"oci-archive:{archive}"))["Digest"] == desc["digest"]


def test_repo_tags_use_docker_short_names_and_digest_references_have_none(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "layout", image())
    cases = {"redis:7": ["redis:7"], "docker.io/library/redis:7": ["redis:7"], "ghcr.io/a/b:c": ["ghcr.io/a/b:c"],
             f"ghcr.io/a/b@{layout.image.digest}": []}
    for i, (reference, tags) in enumerate(cases.items()):
        archive = export(layout, tmp_path / f"{i}.tar", "docker-archive", reference)
        assert json.loads(members(archive)["manifest.json"])[0]["RepoTags"] == tags
    assert json.loads(skopeo("inspect", f"docker-archive:{archive}"))["Digest"]  # untagged archives read too


@pytest.mark.parametrize("fmt", ["oci-archive", "docker-archive"])
def test_a_failed_export_leaves_the_old_file_and_no_temporary(tmp_path: Path, fmt: str) -> None:
    img = image("gzip")
    layout = Layout(tmp_path / "layout", img)
    victim = img.layers[1]
    blob_path = layout.root / "blobs" / "sha256" / victim.digest.split(":")[1]
    blob_path.write_bytes(victim.data[:-10] + b"0123456789")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "image.tar"
    out.write_bytes(b"the previous export")
    with pytest.raises(VerificationError):
        export(layout, out, fmt)
    assert out.read_bytes() == b"the previous export"
    assert os.listdir(out_dir) == ["image.tar"]


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "layout", image())
    with pytest.raises(UsageError, match="unknown export format"):
        export(layout, tmp_path / "x.tar", "zip")
    with pytest.raises(UsageError, match="invalid reference"):
        export(layout, tmp_path / "x.tar", "oci-archive", "app:not a tag")
    assert not (tmp_path / "x.tar").exists()


def test_a_docker_archive_of_a_decompression_bomb_stops_at_the_limit(tmp_path: Path) -> None:
    from puller.errors import UnsafeContent

    bomb = make_layer([f("zeros", bytes(24 << 20))])
    layout = Layout(tmp_path / "layout", build_image([make_layer([f("a", b"1")]), bomb]))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(UnsafeContent, match=f"layer {bomb.digest}: .*more than the limit of 4194304 bytes"):
        export_image(REFERENCE, layout.image.manifest, layout.manifest, layout.config_raw, layout.open_blob,
                     out_dir / "image.tar", "docker-archive", 4 << 20)
    assert os.listdir(out_dir) == []
    export_image(REFERENCE, layout.image.manifest, layout.manifest, layout.config_raw, layout.open_blob,
                 out_dir / "image.tar", "oci-archive", 4 << 20)  # blobs as stored: nothing decompressed
