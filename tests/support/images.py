"""Deterministic test images built from tarfile + JSON: the same inputs give the same digests.

Nothing here talks to a registry except `push_image`/`push_index`, which use the plain OCI API.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_MEDIA_TYPES = {
    ("oci", "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("oci", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("oci", ""): "application/vnd.oci.image.layer.v1.tar",
    ("docker", "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ("docker", ""): "application/vnd.docker.image.rootfs.diff.tar",
}
FIXED_MTIME = 1_700_000_000


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes = field(repr=False)
    digest: str
    diff_id: str | None = None  # for layers: digest of the uncompressed tar

    @classmethod
    def of(cls, media_type: str, data: bytes, diff_id: str | None = None) -> Blob:
        return cls(media_type, data, sha256(data), diff_id)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True)
class Entry:
    """One tar member. kind: file, dir, symlink, hardlink, fifo, chardev, blockdev."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""
    uid: int = 0
    gid: int = 0
    mtime: int = FIXED_MTIME
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] = field(default_factory=dict)


_TAR_TYPES = {
    "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE, "chardev": tarfile.CHRTYPE, "blockdev": tarfile.BLKTYPE,
}


def make_tar(entries: Iterable[Entry | tuple[str, bytes]]) -> bytes:
    """A deterministic tar (PAX format) of the entries, in the order given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for item in entries:
            entry = Entry(item[0], data=item[1]) if isinstance(item, tuple) else item
            info = tarfile.TarInfo(entry.name)
            info.type = _TAR_TYPES[entry.kind]
            info.mode = entry.mode if entry.kind != "dir" or entry.mode != 0o644 else 0o755
            info.uid, info.gid, info.mtime = entry.uid, entry.gid, entry.mtime
            info.uname = info.gname = ""
            info.linkname = entry.target
            info.devmajor, info.devminor = entry.devmajor, entry.devminor
            if entry.pax:
                info.pax_headers = dict(entry.pax)
            if entry.kind == "file":
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="", compresslevel=6) as gz:
            gz.write(data)
        return out.getvalue()
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    if compression == "":
        return data
    raise ValueError(f"unknown compression {compression!r}")


def make_layer(entries: Iterable[Entry | tuple[str, bytes]], compression: str = "gzip", flavour: str = "oci") -> Blob:
    tar = make_tar(entries)
    return Blob.of(LAYER_MEDIA_TYPES[(flavour, compression)], compress(tar, compression), diff_id=sha256(tar))


@dataclass(frozen=True)
class Image:
    manifest: bytes = field(repr=False)
    media_type: str
    config: Blob
    layers: tuple[Blob, ...]
    platform: dict[str, str]

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.manifest), **extra}


@dataclass(frozen=True)
class Index:
    manifest: bytes = field(repr=False)
    media_type: str
    images: tuple[Image, ...]

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def build_image(
    layers: Iterable[Blob],
    platform: str = "linux/amd64",
    flavour: str = "oci",
    config_extra: dict[str, object] | None = None,
    annotations: dict[str, str] | None = None,
    subject: dict[str, object] | None = None,
    artifact_type: str | None = None,
) -> Image:
    """An image manifest over `layers` with a config naming their diff_ids."""
    layer_list = tuple(layers)
    os_, arch, *variant = platform.split("/")
    plat = {"os": os_, "architecture": arch, **({"variant": variant[0]} if variant else {})}
    config_obj: dict[str, object] = {
        **plat,
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layer_list]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "cargobay tests"} for _ in layer_list],
    }
    config_obj.update(config_extra or {})
    config = Blob.of(OCI_CONFIG if flavour == "oci" else DOCKER_CONFIG, canonical_json(config_obj))
    media_type = OCI_MANIFEST if flavour == "oci" else DOCKER_MANIFEST
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layer_list],
    }
    if annotations:
        manifest["annotations"] = annotations
    if subject:
        manifest["subject"] = subject
    if artifact_type:
        manifest["artifactType"] = artifact_type
    return Image(canonical_json(manifest), media_type, config, layer_list, plat)


def simple_image(seed: str, platform: str = "linux/amd64", layer_count: int = 2, compression: str = "gzip",
                 flavour: str = "oci", layer_size: int = 1024) -> Image:
    """A small distinct image: `seed` makes its content (and so digests) unique."""
    layers = []
    for i in range(layer_count):
        body = hashlib.sha256(f"{seed}/{i}".encode()).digest() * (layer_size // 32 + 1)
        layers.append(make_layer([Entry(f"layer{i}", "dir", mode=0o755), (f"layer{i}/{seed}.bin", body[:layer_size])],
                                 compression, flavour))
    return build_image(layers, platform, flavour)


def build_index(images: Iterable[Image], flavour: str = "oci", annotations: dict[str, str] | None = None) -> Index:
    image_list = tuple(images)
    media_type = OCI_INDEX if flavour == "oci" else DOCKER_LIST
    obj: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [img.descriptor(platform=img.platform) for img in image_list],
    }
    if annotations:
        obj["annotations"] = annotations
    return Index(canonical_json(obj), media_type, image_list)


def write_oci_layout(root: Path, target: Image | Index, ref_name: str | None = "latest") -> Path:
    """Write an OCI image layout (as skopeo's `oci:` transport reads it) holding `target`."""
    blobs_dir = root / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    images = target.images if isinstance(target, Index) else (target,)
    for image in images:
        for blob in image.blobs():
            (blobs_dir / blob.digest.split(":")[1]).write_bytes(blob.data)
        (blobs_dir / image.digest.split(":")[1]).write_bytes(image.manifest)
    (blobs_dir / target.digest.split(":")[1]).write_bytes(target.manifest)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    descriptor: dict[str, object] = {"mediaType": target.media_type, "digest": target.digest,
                                     "size": len(target.manifest)}
    if ref_name:
        descriptor["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
    return root


def push_blob(client: httpx.Client, base_url: str, repo: str, blob: Blob) -> None:
    """Monolithic POST ?digest= upload."""
    r = client.post(f"{base_url}/v2/{repo}/blobs/uploads/", params={"digest": blob.digest}, content=blob.data,
                    headers={"Content-Type": "application/octet-stream"})
    if r.status_code == 202:  # a registry that ignores monolithic POST: finish with PUT
        location = httpx.URL(base_url).join(r.headers["Location"])
        # Keep the Location's own query (Distribution carries its `_state` there) and add the digest.
        r = client.put(location.copy_merge_params({"digest": blob.digest}), content=blob.data)
    r.raise_for_status()


def push_manifest(client: httpx.Client, base_url: str, repo: str, reference: str, body: bytes,
                  media_type: str) -> httpx.Response:
    r = client.put(f"{base_url}/v2/{repo}/manifests/{reference}", content=body, headers={"Content-Type": media_type})
    r.raise_for_status()
    return r


def push_image(client: httpx.Client, base_url: str, repo: str, image: Image, tag: str | None = None) -> None:
    for blob in image.blobs():
        push_blob(client, base_url, repo, blob)
    push_manifest(client, base_url, repo, tag or image.digest, image.manifest, image.media_type)


def push_index(client: httpx.Client, base_url: str, repo: str, index: Index, tag: str | None = None) -> None:
    for image in index.images:
        push_image(client, base_url, repo, image)
    push_manifest(client, base_url, repo, tag or index.digest, index.manifest, index.media_type)
