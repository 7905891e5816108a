"""OCI and Docker schema 2 image manifests and indexes.

Parsed objects keep the exact raw bytes they came from: digests are only ever computed over those
bytes, never over a re-serialisation.

Parsing is strict by default: besides the schema, a manifest's fields must agree with its type
(`_check_consistent`), so that no document can be read as two different things (the ambiguity of
CVE-2021-41190: an index that also carries `layers` is an image manifest to a client that trusts
the body, and an index to one that trusts the Content-Type). `strict=False` only checks the schema,
for reading back what a store accepted under older rules (garbage collection must still see every
blob such a manifest names, see `referenced_blobs`).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from . import mediatypes as mt
from .digest import Digest
from .errors import ErrorCode, OCIValidationError
from .platform import Platform

#: Manifests larger than this are refused (distribution-spec recommends at least 4 MiB be accepted).
MAX_MANIFEST_SIZE = 4 * 1024 * 1024

ATTESTATION_REFERENCE_TYPE = "vnd.docker.reference.type"


def _invalid(message: str) -> OCIValidationError:
    return OCIValidationError(ErrorCode.MANIFEST_INVALID, message)


def _annotations(obj: dict[str, Any], where: str) -> dict[str, str]:
    value = obj.get("annotations")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _invalid(f"{where}: annotations must map strings to strings")
    return dict(value)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    artifact_type: str | None = None
    data: str | None = None

    @classmethod
    def from_json(cls, obj: Any, where: str = "descriptor") -> Descriptor:
        if not isinstance(obj, dict):
            raise _invalid(f"{where} must be an object")
        media_type = obj.get("mediaType")
        if not isinstance(media_type, str) or not media_type:
            raise _invalid(f"{where}: mediaType must be a non-empty string")
        digest_text = obj.get("digest")
        if not isinstance(digest_text, str):
            raise _invalid(f"{where}: digest must be a string")
        try:
            digest = Digest.parse(digest_text)
        except OCIValidationError as exc:
            raise _invalid(f"{where}: {exc.message}") from None
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _invalid(f"{where}: size must be a non-negative integer")
        urls = obj.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise _invalid(f"{where}: urls must be a list of strings")
        platform = Platform.from_json(obj["platform"]) if obj.get("platform") is not None else None
        artifact_type = obj.get("artifactType")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise _invalid(f"{where}: artifactType must be a string")
        data = obj.get("data")
        if data is not None and not isinstance(data, str):
            raise _invalid(f"{where}: data must be base64 text")
        return cls(media_type, digest, size, tuple(urls), _annotations(obj, where), platform, artifact_type, data)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.data is not None:
            out["data"] = self.data
        return out

    def is_attestation(self) -> bool:
        """BuildKit's attestation entries in an index: not something to run."""
        if self.annotations.get(ATTESTATION_REFERENCE_TYPE) == "attestation-manifest":
            return True
        return self.platform is not None and self.platform.os == "unknown" and self.platform.architecture == "unknown"


@dataclass(frozen=True)
class _Parsed:
    raw: bytes
    media_type: str
    subject: Descriptor | None
    artifact_type: str | None
    annotations: dict[str, str]

    def digest(self, algorithm: str = "sha256") -> Digest:
        return Digest.of(self.raw, algorithm)


@dataclass(frozen=True)
class ImageManifest(_Parsed):
    config: Descriptor = None  # type: ignore[assignment]
    layers: tuple[Descriptor, ...] = ()

    def blobs(self) -> tuple[Descriptor, ...]:
        """Every blob this manifest needs: config first, then layers."""
        return (self.config, *self.layers)

    @property
    def effective_artifact_type(self) -> str | None:
        """`artifactType`, else the config media type (image-spec's rule for referrers)."""
        return self.artifact_type or self.config.media_type


@dataclass(frozen=True)
class ImageIndex(_Parsed):
    manifests: tuple[Descriptor, ...] = ()

    @property
    def effective_artifact_type(self) -> str | None:
        return self.artifact_type


Manifest = ImageManifest | ImageIndex


def _present(obj: dict[str, Any], *names: str) -> list[str]:
    """Those of `names` that `obj` carries (a JSON null counts as absent, as Go decoders read it)."""
    return [name for name in names if obj.get(name) is not None]


def _check_consistent(obj: dict[str, Any], media_type: str, manifest: Manifest) -> None:
    """Refuse fields that contradict the manifest's type (see the module docstring)."""
    if media_type in mt.INDEXES:
        stray = _present(obj, "config", "layers")
        if stray:
            raise _invalid(f"an image index ({media_type}) must not carry {' or '.join(stray)}: "
                           "that would make it an image manifest too")
    elif _present(obj, "manifests"):
        raise _invalid(f"an image manifest ({media_type}) must not carry manifests: that would make it an index too")
    if media_type in (mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST):
        if obj.get("mediaType") != media_type:
            raise _invalid(f"a Docker schema 2 manifest must name its mediaType {media_type!r} in the body")
        oci_only = _present(obj, "subject", "artifactType")
        if oci_only:
            # Docker schema 2 has no such fields: a client setting them means an OCI manifest, and
            # accepting them would make the registry index referrers the Docker type cannot express.
            raise _invalid(f"{' and '.join(oci_only)} exist only in OCI manifests, not in {media_type}; "
                           f"push it as {mt.OCI_INDEX if media_type in mt.INDEXES else mt.OCI_MANIFEST}")
    for label, descriptor in labelled_descriptors(manifest):
        if descriptor.data is not None:
            _check_embedded_data(descriptor, label)


def labelled_descriptors(manifest: Manifest) -> list[tuple[str, Descriptor]]:
    """Every descriptor of a manifest with the JSON path that names it in messages
    (`config`, `layers[0]`, `manifests[2]`, `subject`)."""
    if isinstance(manifest, ImageIndex):
        found = [(f"manifests[{i}]", d) for i, d in enumerate(manifest.manifests)]
    else:
        found = [("config", manifest.config), *((f"layers[{i}]", d) for i, d in enumerate(manifest.layers))]
    if manifest.subject is not None:
        found.append(("subject", manifest.subject))
    return found


def _check_embedded_data(descriptor: Descriptor, where: str) -> None:
    """image-spec: a descriptor's `data` is the referenced content itself, so it must have the
    descriptor's size and digest."""
    try:
        content = base64.b64decode(descriptor.data or "", validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"{where}: data is not valid base64") from None
    if len(content) != descriptor.size:
        raise _invalid(f"{where}: data holds {len(content)} bytes but size says {descriptor.size}")
    if Digest.of(content, descriptor.digest.algorithm) != descriptor.digest:
        raise _invalid(f"{where}: data does not match digest {descriptor.digest}")


def _detect_media_type(obj: dict[str, Any], content_type: str | None) -> str:
    declared = obj.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType must be a string")
    given = mt.base_media_type(content_type)
    if declared and given and given != declared and given not in ("application/json", "application/octet-stream"):
        raise _invalid(f"Content-Type {given!r} does not match the manifest mediaType {declared!r}")
    media_type = declared or (given if given in mt.MANIFESTS else "")
    if not media_type:
        # Neither says: infer the OCI kind from its shape, as image-spec allows.
        media_type = mt.OCI_INDEX if "manifests" in obj else mt.OCI_MANIFEST
    if media_type not in mt.MANIFESTS:
        raise _invalid(f"unsupported manifest media type {media_type!r}")
    return media_type


def _load_object(raw: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except RecursionError:
        raise _invalid("manifest JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _invalid("manifest must be a JSON object")
    return obj


def parse_manifest(raw: bytes, content_type: str | None = None, max_size: int | None = MAX_MANIFEST_SIZE,
                   strict: bool = True) -> Manifest:
    """Parse and validate manifest bytes; raises OCIValidationError(MANIFEST_INVALID) when invalid.
    `max_size=None` leaves the size limit to the caller (the registry's configurable limit).
    `strict=False` skips the checks that fields agree with the type (module docstring)."""
    if max_size is not None and len(raw) > max_size:
        raise OCIValidationError(ErrorCode.MANIFEST_INVALID, f"manifest is larger than {max_size} bytes")
    obj = _load_object(raw)
    manifest = _parse_object(raw, obj, content_type)
    if strict:
        _check_consistent(obj, manifest.media_type, manifest)
    return manifest


def referenced_blobs(raw: bytes) -> set[Digest]:
    """Every digest a stored manifest's `config` and `layers` name, whatever its type says
    and however it breaks today's rules: what garbage collection must keep. Unreadable parts are
    skipped; bytes that are no JSON object name nothing."""
    try:
        obj = _load_object(raw)
    except OCIValidationError:
        return set()
    entries: list[Any] = [obj.get("config")]
    if isinstance(obj.get("layers"), list):
        entries.extend(obj["layers"])
    found: set[Digest] = set()
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("digest"), str):
            try:
                found.add(Digest.parse(entry["digest"]))
            except OCIValidationError:
                continue
    return found


def _parse_object(raw: bytes, obj: dict[str, Any], content_type: str | None) -> Manifest:
    if obj.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2")
    media_type = _detect_media_type(obj, content_type)
    subject = Descriptor.from_json(obj["subject"], "subject") if obj.get("subject") is not None else None
    artifact_type = obj.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _invalid("artifactType must be a string")
    annotations = _annotations(obj, "manifest")
    if media_type in mt.INDEXES:
        entries = obj.get("manifests")
        if not isinstance(entries, list):
            raise _invalid("an index needs a manifests list")
        manifests = tuple(Descriptor.from_json(e, f"manifests[{i}]") for i, e in enumerate(entries))
        return ImageIndex(raw, media_type, subject, artifact_type, annotations, manifests)
    if "config" not in obj:
        raise _invalid("an image manifest needs a config descriptor")
    config = Descriptor.from_json(obj["config"], "config")
    layers_json = obj.get("layers", [])
    if not isinstance(layers_json, list):
        raise _invalid("layers must be a list")
    layers = tuple(Descriptor.from_json(e, f"layers[{i}]") for i, e in enumerate(layers_json))
    return ImageManifest(raw, media_type, subject, artifact_type, annotations, config, layers)
