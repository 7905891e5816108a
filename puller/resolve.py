"""Reference → image manifest: fetch what the reference names and, for an index (or Docker manifest
list), pick the entry for the wanted platform with the usual variant fallbacks, ignoring
attestation entries."""

from __future__ import annotations

from dataclasses import dataclass

from distclient import Endpoint, RegistryClient
from ocispec import mediatypes as mt
from ocispec.digest import Digest
from ocispec.errors import OCIValidationError
from ocispec.manifest import Descriptor, ImageIndex, ImageManifest
from ocispec.platform import Platform, match_rank
from ocispec.reference import Reference, parse_reference

from .errors import NotFound, UsageError, VerificationError

MAX_INDEX_DEPTH = 3


@dataclass(frozen=True)
class Resolved:
    """What a fetch is about: the image manifest for one platform, and what the reference named."""

    ref: Reference
    #: The digest the reference resolved to (an index's digest for multi-platform images).
    top_digest: Digest
    descriptor: Descriptor
    manifest: ImageManifest
    index: ImageIndex | None
    endpoint: Endpoint

    @property
    def manifest_raw(self) -> bytes:
        return self.manifest.raw


def parse_ref(text: str) -> Reference:
    """A user-typed reference, normalised like Docker; UsageError when it is not one."""
    try:
        return parse_reference(text)
    except OCIValidationError as exc:
        raise UsageError(f"invalid reference {text!r}: {exc.message}") from None


def parse_platform(text: str | None) -> Platform:
    if not text:
        return Platform.host()
    try:
        return Platform.parse(text)
    except OCIValidationError as exc:
        raise UsageError(exc.message) from None


def select_platform(index: ImageIndex, wanted: Platform) -> Descriptor:
    """The best entry of `index` for `wanted`; NotFound naming what is there when none fits."""
    best: tuple[int, int, Descriptor] | None = None
    for position, entry in enumerate(index.manifests):
        if entry.is_attestation() or entry.platform is None or entry.media_type not in mt.MANIFESTS:
            continue
        rank = match_rank(wanted, entry.platform)
        if rank is not None and (best is None or (rank, position) < best[:2]):
            best = (rank, position, entry)
    if best is None:
        available = sorted({str(e.platform) for e in index.manifests if e.platform and not e.is_attestation()})
        raise NotFound(f"no image for platform {wanted} (available: {', '.join(available) or 'none'})")
    return best[2]


def resolve(client: RegistryClient, ref: Reference, platform: Platform) -> Resolved:
    """Fetch the manifest `ref` names and descend through indexes to `platform`'s image."""
    fetched = client.get_manifest(ref)
    top_digest = fetched.digest
    manifest = fetched.manifest
    descriptor = Descriptor(manifest.media_type, fetched.digest, len(fetched.raw))
    top_index: ImageIndex | None = None
    depth = 0
    while isinstance(manifest, ImageIndex):
        depth += 1
        if depth > MAX_INDEX_DEPTH:
            raise VerificationError(f"{ref}: indexes nested deeper than {MAX_INDEX_DEPTH}")
        top_index = top_index or manifest
        descriptor = select_platform(manifest, platform)
        if descriptor.size > 4 * 1024 * 1024:
            raise VerificationError(f"{ref}: manifest {descriptor.digest} of {descriptor.size} bytes refused")
        fetched = client.get_manifest(ref, str(descriptor.digest), media_type=descriptor.media_type)
        if len(fetched.raw) != descriptor.size:
            raise VerificationError(f"{ref}: manifest {descriptor.digest} has {len(fetched.raw)} bytes, "
                                    f"the index says {descriptor.size}")
        manifest = fetched.manifest
    return Resolved(ref, top_digest, descriptor, manifest, top_index, fetched.endpoint)
