"""What an image's page shows: an index's platforms and attestations, a manifest's layers and its
config (entrypoint, cmd, env, labels, ports, user, history), the raw JSON of both, and the
referrers grouped by artifactType. Synchronous storage reads (the pages run them in the thread
pool); every blob is read through the repository's view, so only what it links is shown."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ocispec.digest import Digest
from ocispec.manifest import Descriptor, ImageIndex, ImageManifest, Manifest
from storage import Repository, StorageError

#: Configs larger than this are not read into a page (a real image config is a few KiB).
MAX_CONFIG_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ImageConfig:
    platform: str
    entrypoint: list[str]
    cmd: list[str]
    env: list[str]
    labels: dict[str, str]
    exposed_ports: list[str]
    user: str
    workdir: str
    created: str
    history: list[dict[str, Any]]
    raw: bytes


@dataclass
class ImageDetails:
    name: str
    digest: Digest
    manifest: Manifest
    raw_manifest: bytes
    tags: list[str]
    platforms: list[Descriptor] = field(default_factory=list)        # an index's runnable entries
    attestations: list[Descriptor] = field(default_factory=list)     # an index's attestation entries
    config: ImageConfig | None = None
    config_missing: bool = False
    referrers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return isinstance(self.manifest, ImageIndex)

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        return self.manifest.layers if isinstance(self.manifest, ImageManifest) else ()


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def read_config(repo: Repository, manifest: ImageManifest) -> ImageConfig | None:
    """The manifest's config, parsed as an image config as far as it is one; None when it is not
    stored here, too big, or not JSON (an artifact's empty config `{}` parses to an empty one)."""
    descriptor = manifest.config
    if descriptor.size > MAX_CONFIG_BYTES:
        return None
    try:
        reader, size = repo.blobs.open_sized(descriptor.digest)
        with reader:
            raw = reader.read(min(size, MAX_CONFIG_BYTES) + 1)
        obj = json.loads(raw)
    except (StorageError, ValueError):
        return None
    if not isinstance(obj, dict):
        return None
    conf: dict[str, Any] = obj["config"] if isinstance(obj.get("config"), dict) else {}
    platform = "/".join(str(p) for p in (obj.get("os"), obj.get("architecture"), obj.get("variant"))
                        if isinstance(p, str) and p)
    labels: dict[str, Any] = conf["Labels"] if isinstance(conf.get("Labels"), dict) else {}
    ports: dict[str, Any] = conf["ExposedPorts"] if isinstance(conf.get("ExposedPorts"), dict) else {}
    history = [h for h in obj.get("history", []) if isinstance(h, dict)] if isinstance(obj.get("history"), list) \
        else []
    return ImageConfig(platform if "/" in platform else "", _strings(conf.get("Entrypoint")),
                       _strings(conf.get("Cmd")), _strings(conf.get("Env")),
                       {str(k): str(v) for k, v in labels.items()}, sorted(str(p) for p in ports),
                       str(conf.get("User") or ""), str(conf.get("WorkingDir") or ""), str(obj.get("created") or ""),
                       history, raw)


def image_details(repo: Repository, digest: Digest, manifest: Manifest, raw: bytes) -> ImageDetails:
    details = ImageDetails(repo.name, digest, manifest, raw, repo.tags.tags_of(digest))
    if isinstance(manifest, ImageIndex):
        details.platforms = [e for e in manifest.manifests if not e.is_attestation()]
        details.attestations = [e for e in manifest.manifests if e.is_attestation()]
    elif isinstance(manifest, ImageManifest):
        details.config = read_config(repo, manifest)
        details.config_missing = details.config is None
    details.referrers = referrers_by_type(repo, digest)
    return details


def referrers_by_type(repo: Repository, digest: Digest) -> dict[str, list[dict[str, Any]]]:
    """The referrers of `digest` by artifactType (signatures, SBOMs, attestations), types sorted."""
    groups: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for descriptor in repo.referrers.list(digest):
        groups[str(descriptor.get("artifactType") or descriptor.get("mediaType") or "")].append(descriptor)
    return dict(sorted(groups.items()))


def attestation_subject(entry: Descriptor) -> str:
    """The digest an attestation entry speaks about (BuildKit's `vnd.docker.reference.digest`)."""
    return entry.annotations.get("vnd.docker.reference.digest", "")
