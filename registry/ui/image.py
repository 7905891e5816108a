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
from ocispec.errors import OCIValidationError
from ocispec.manifest import Descriptor, ImageIndex, ImageManifest, Manifest
from storage import Repository, StorageError

#: BuildKit's annotation naming the manifest an attestation entry is about.
ATTESTED_DIGEST = "vnd.docker.reference.digest"
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
    #: The raw JSON pretty-printed, made here in the thread pool rather than while rendering.
    pretty_manifest: str = ""
    pretty_config: str = ""

    @property
    def is_index(self) -> bool:
        return isinstance(self.manifest, ImageIndex)

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        return self.manifest.layers if isinstance(self.manifest, ImageManifest) else ()


def _strings(value: Any) -> list[str]:
    """The strings of a JSON list (anything else a config holds there is not shown: never str() of
    an arbitrary, maybe deeply nested, value)."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _history(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [{"created_by": _text(h.get("created_by")), "empty_layer": h.get("empty_layer") is True}
            for h in value if isinstance(h, dict)]


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
    except (StorageError, ValueError, RecursionError):  # nesting deep enough to exhaust the parser: not a config
        return None
    if not isinstance(obj, dict):
        return None
    conf: dict[str, Any] = obj["config"] if isinstance(obj.get("config"), dict) else {}
    platform = "/".join(str(p) for p in (obj.get("os"), obj.get("architecture"), obj.get("variant"))
                        if isinstance(p, str) and p)
    labels: dict[str, Any] = conf["Labels"] if isinstance(conf.get("Labels"), dict) else {}
    ports: dict[str, Any] = conf["ExposedPorts"] if isinstance(conf.get("ExposedPorts"), dict) else {}
    return ImageConfig(platform if "/" in platform else "", _strings(conf.get("Entrypoint")),
                       _strings(conf.get("Cmd")), _strings(conf.get("Env")),
                       {k: v for k, v in labels.items() if isinstance(v, str)}, sorted(ports),
                       _text(conf.get("User")), _text(conf.get("WorkingDir")), _text(obj.get("created")),
                       _history(obj.get("history")), raw)


def image_details(repo: Repository, digest: Digest, manifest: Manifest, raw: bytes) -> ImageDetails:
    details = ImageDetails(repo.name, digest, manifest, raw, repo.tags.tags_of(digest))
    if isinstance(manifest, ImageIndex):
        details.platforms = [e for e in manifest.manifests if not e.is_attestation()]
        details.attestations = [e for e in manifest.manifests if e.is_attestation()]
    elif isinstance(manifest, ImageManifest):
        details.config = read_config(repo, manifest)
        details.config_missing = details.config is None
    details.referrers = referrers_by_type(repo, digest)
    details.pretty_manifest = pretty_json(raw)
    details.pretty_config = pretty_json(details.config.raw) if details.config is not None else ""
    return details


def referrers_by_type(repo: Repository, digest: Digest) -> dict[str, list[dict[str, Any]]]:
    """The referrers of `digest` by artifactType (signatures, SBOMs, attestations), types sorted."""
    groups: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for descriptor in repo.referrers.list(digest):
        groups[str(descriptor.get("artifactType") or descriptor.get("mediaType") or "")].append(descriptor)
    return dict(sorted(groups.items()))


def attestation_subject(entry: Descriptor) -> str:
    """The digest an attestation entry speaks about (BuildKit's `vnd.docker.reference.digest`), or ""
    when the annotation is missing or not a digest."""
    try:
        return str(Digest.parse(entry.annotations.get(ATTESTED_DIGEST, "")))
    except OCIValidationError:
        return ""


def pretty_json(raw: bytes) -> str:
    """JSON indented for reading; bytes that are not JSON (or nest too deep to parse) as they are."""
    try:
        return json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return raw.decode("utf-8", "replace")
