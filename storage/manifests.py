"""Manifests of one repository: validated on the way in, stored byte for byte in the CAS, linked
as revisions, served back with the media type they were pushed with."""

from __future__ import annotations

from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass

from ocispec import mediatypes as mt
from ocispec.digest import Digest
from ocispec.errors import OCIValidationError
from ocispec.manifest import Descriptor, ImageIndex, ImageManifest, Manifest, labelled_descriptors, parse_manifest

from . import paths
from .blobs import BlobStore, RepositoryBlobs
from .driver.base import StorageDriver
from .errors import (
    BlobUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    PathNotFound,
    StorageError,
    TagUnknown,
)
from .links import delete_quietly, digests_below, link_content, object_exists
from .manifest_cache import ManifestCache
from .recent_links import NO_MEMORY
from .referrers import ReferrerStore
from .tags import TagStore


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: Digest
    media_type: str
    raw: bytes

    @property
    def size(self) -> int:
        return len(self.raw)

    def parsed(self) -> Manifest | None:
        """The bytes as the model reads them (leniently: they were checked when pushed); None when
        they are not a manifest."""
        try:
            return parse_manifest(self.raw, self.media_type, max_size=None, strict=False)
        except OCIValidationError:
            return None


@dataclass(frozen=True, slots=True)
class PutResult:
    digest: Digest
    subject: Digest | None
    tags: tuple[str, ...] = ()
    media_type: str = ""


@dataclass(frozen=True, slots=True)
class ManifestRules:
    """How strictly a push's references are checked; the registry builds it from its settings
    (`validation.manifests`) for each push.

    `allow_sparse_indexes`: an index may name child manifests this repository does not have (a
    pull-through cache keeping one platform of a multi-platform image). Children that are present
    are still checked.

    `allow_absent_blobs`: an image manifest may name a config or layers this repository does not
    have (a pull-through cache stores a manifest before it fetches any blob). Blobs that are
    present are still size-checked; absent ones are not linked, so the repository serves a blob
    only once it has been filled (`RepositoryBlobs.fill`) or linked.

    `refresh_links`: the links of the blobs it names are rewritten, marking them as just used: a
    cache's repositories expire by the age of their links (storage.marking.recently_pulled). A
    push needs no rewrite to be safe from garbage collection (`_settle` keeps every collection off
    what it names), so it saves a write per blob (on S3 a PUT per layer).
    """

    allow_sparse_indexes: bool = False
    allow_absent_blobs: bool = False
    refresh_links: bool = False


#: The default: every reference must be present.
STRICT = ManifestRules()
#: How often a push puts back what a collection removed before giving up (one is the norm).
_SETTLE_ROUNDS = 3
#: What a pull-through cache stores: an upstream's manifest as it is, its blobs fetched when asked.
CACHED_MANIFEST_RULES = ManifestRules(allow_sparse_indexes=True, allow_absent_blobs=True, refresh_links=True)


def _stored_blobs(image: ImageManifest, absent: Set[Digest] = frozenset()) -> set[Digest]:
    """The blobs an image's push checks are stored in its repository: config and layers, but the
    non-distributable ones (they live elsewhere) and those its rules let be `absent`."""
    return {d.digest for d in image.blobs() if not d.urls and d.digest not in absent}


class ManifestStore:
    def __init__(self, driver: StorageDriver, blobs: BlobStore, name: str, cache: ManifestCache | None = None,
                 *, serving: bool = False) -> None:
        """`serving`: `get` may believe a revision link seen lately (storage.recent_links), as the
        registry's views do; without it every read looks."""
        self.driver = driver
        self.blobs = blobs
        self.name = name
        #: The store's cache of manifests already read (storage.manifest_cache); None: read each time.
        self.cache = cache
        #: What `get` checks revision links with; nothing else here believes it.
        self._served_links = blobs.recent_links if serving else NO_MEMORY
        self.layer_links = RepositoryBlobs(blobs, name)
        self.tags = TagStore(driver, name)
        self.referrers = ReferrerStore(driver, name)

    # -- write -----------------------------------------------------------------------------------
    def put(self, raw: bytes, content_type: str | None, reference_digest: Digest | None = None,
            tags: tuple[str, ...] = (), rules: ManifestRules = STRICT) -> PutResult:
        """Validate and store `raw`; tag it with `tags`. When pushed by digest, `reference_digest`
        must be the digest of `raw` (its algorithm decides which hash is computed). Every blob and
        child manifest it names must be in this repository with the size its descriptor claims
        (ManifestBlobUnknown, ManifestInvalid); `rules` relaxes that for sparse indexes and
        absent blobs."""
        since = self.layer_links.relying()  # before the checks below first rely on what is stored
        digest = Digest.of(raw, reference_digest.algorithm if reference_digest else "sha256")
        if reference_digest is not None and digest != reference_digest:
            raise DigestInvalid(f"manifest digest {digest} does not match the reference {reference_digest}")
        try:
            manifest = parse_manifest(raw, content_type, max_size=None)  # the HTTP layer enforces its limit
        except OCIValidationError as exc:
            raise ManifestInvalid(exc.message) from None
        absent = self._check_references(manifest, rules)
        blobs = _stored_blobs(manifest, absent) if isinstance(manifest, ImageManifest) else set()
        children, their_blobs = self._children_and_their_blobs(manifest, rules)
        # No media-type file: bytes the model accepts have one possible type (named in them, or the
        # only one their shape fits), which `_media_type` reads back from them when there is none.
        if self.cache is not None:
            self.cache.forget(self.name, digest)  # pushed again, maybe as another type: read afresh
        if manifest.subject is not None:
            self.referrers.add(manifest.subject.digest, self._referrer_descriptor(manifest, digest))
        created = not self.exists(digest)
        # The bytes, then the revision link, which makes the manifest visible in this repository:
        # durable together (one flush on disk: `StorageDriver.put_many`).
        revision_link = self._link_revision(digest, first=self.blobs.verified_writes(digest, raw))
        if rules.refresh_links:
            for blob in blobs:
                self.layer_links.link(blob)
        # No collection may be deleting any of it once this returns.
        self._settle(digest, raw, blobs | their_blobs, children, created, since)
        # Only then the catalog's marker and the tags: durable together too.
        self.tags.set_all(tags, digest, along=[self.tags.index.repository_marker(self.name)])
        self.tags.index.repository_marked(self.name, revision_link)
        return PutResult(digest, manifest.subject.digest if manifest.subject else None, tags, manifest.media_type)

    def _settle(self, digest: Digest, raw: bytes, blobs: set[Digest], children: set[Digest], created: bool,
                since: float) -> None:
        """After the revision link and the blobs' links were written: wait out any garbage
        collection that may be deleting the manifest's bytes, its blobs or its children
        (storage.sweeping). The manifest's own bytes are put back if one took them (we have them);
        a blob whose bytes went, or a child that went, fails the push with ManifestBlobUnknown, and
        a revision this push created is withdrawn first, so no success is answered for a manifest
        that names what is missing."""
        intact = self._intact_for(digest, children)
        pending = blobs | children | {digest}
        for _ in range(_SETTLE_ROUNDS):
            missing = self.blobs.sweeps.settle(pending, intact, since)
            if not missing:
                return
            lost = sorted((b for b in missing if b != digest and (b in children or not self.blobs.exists(b))), key=str)
            if lost:
                if created:
                    delete_quietly(self.driver, paths.manifest_revision(self.name, digest))
                what = "manifest" if lost[0] in children else "blob"
                raise ManifestBlobUnknown(f"{what} unknown to repository: {lost[0]} (removed while the manifest "
                                          "was pushed)", digest=str(lost[0]))
            if digest in missing:
                self._link_revision(digest, first=[(paths.blob_data(digest), raw)])  # `raw` is what hashed to it
            for blob in missing - {digest}:
                self.layer_links.link(blob)  # only unlinked: its bytes are there
            pending = missing
        raise StorageError(f"garbage collection kept removing what manifest {digest} needs while it was pushed; retry")

    def _intact_for(self, manifest: Digest, children: set[Digest]) -> Callable[[Digest], bool]:
        def intact(digest: Digest) -> bool:
            if digest == manifest or digest in children:
                return self.blobs.exists(digest) and self.exists(digest)
            return self.layer_links.intact(digest)
        return intact

    def _children_and_their_blobs(self, manifest: Manifest, rules: ManifestRules) -> tuple[set[Digest], set[Digest]]:
        """An index's children and the blobs they name: what its push relies on besides its own
        bytes. A child that its own push, refused meanwhile, withdraws, or one whose blobs a
        collection takes, must fail the index's push too. Nothing for an image, nor under rules
        that let children or blobs be absent (the cache's: it fetches them when asked)."""
        if not isinstance(manifest, ImageIndex) or rules.allow_sparse_indexes or rules.allow_absent_blobs:
            return set(), set()
        children = {d.digest for d in manifest.manifests}  # each checked present by `_check_references`
        their_blobs: set[Digest] = set()
        for child in children:
            try:
                parsed = parse_manifest(self.blobs.read(child), max_size=None, strict=False)
            except BlobUnknown:
                continue  # its bytes are gone already: the settle finds the child broken
            except OCIValidationError:
                continue  # stored, so it was checked when pushed: nothing it names is read here
            if isinstance(parsed, ImageManifest):  # the blobs its own push checked are here
                their_blobs |= _stored_blobs(parsed)
        return children, their_blobs

    def _check_references(self, manifest: Manifest, rules: ManifestRules) -> set[Digest]:
        """Each descriptor must name content this repository has, of the claimed size; returns
        the blobs `rules` let be absent. The subject
        is not checked: distribution-spec requires accepting a subject that is not (yet) pushed, so
        checking it only when present would make the outcome depend on push order."""
        absent: set[Digest] = set()
        for where, descriptor in labelled_descriptors(manifest):
            if where == "subject":
                continue
            if isinstance(manifest, ImageIndex):
                size = self._stored_size(descriptor.digest)
                if size is not None:
                    self._check_size(where, descriptor, size)
                elif not rules.allow_sparse_indexes:
                    raise ManifestBlobUnknown(f"manifest unknown to repository: {descriptor.digest}",
                                              digest=str(descriptor.digest))
                continue
            try:
                stored = self.layer_links.stat(descriptor.digest).size
            except BlobUnknown:
                if descriptor.urls:
                    continue  # non-distributable layers may live elsewhere
                if rules.allow_absent_blobs:
                    absent.add(descriptor.digest)
                    continue
                raise ManifestBlobUnknown(f"blob unknown to repository: {descriptor.digest}",
                                          digest=str(descriptor.digest)) from None
            self._check_size(where, descriptor, stored)
        return absent

    def _stored_size(self, digest: Digest) -> int | None:
        """The size of a manifest of this repository, or None when it has no such manifest."""
        if not self.exists(digest):
            return None
        try:
            return self.blobs.stat(digest).size
        except BlobUnknown:
            return None  # linked, but its bytes are gone: it does not resolve

    @staticmethod
    def _check_size(where: str, descriptor: Descriptor, stored: int) -> None:
        if descriptor.size != stored:
            raise ManifestInvalid(
                f"{where} {descriptor.digest} claims {descriptor.size} bytes but the stored content has {stored}",
                descriptor=where, digest=str(descriptor.digest), size=descriptor.size, stored_size=stored)

    @staticmethod
    def _referrer_descriptor(manifest: Manifest, digest: Digest) -> dict[str, object]:
        descriptor: dict[str, object] = {"mediaType": manifest.media_type, "digest": str(digest),
                                         "size": len(manifest.raw)}
        if manifest.effective_artifact_type:
            descriptor["artifactType"] = manifest.effective_artifact_type
        if manifest.annotations:
            descriptor["annotations"] = manifest.annotations
        return descriptor

    def touch(self, digest: Digest) -> None:
        """Mark the revision as just pulled: its link is rewritten, so `pulled_at` (and what
        garbage collection of cached repositories reads, storage.gc) is now. ManifestUnknown when
        this repository has no such revision: a touch never creates one."""
        if not self.exists(digest):
            raise ManifestUnknown(f"manifest unknown: {digest}", digest=str(digest))
        self._link_revision(digest)

    def _link_revision(self, digest: Digest, first: Sequence[tuple[str, bytes]] = ()) -> str:
        """Write the revision link (remembered as seen: storage.recent_links), after and durable
        together with the writes `first`; its key."""
        key = paths.manifest_revision_link(self.name, digest)
        self.blobs.recent_links.written(key, lambda: self.driver.put_many([*first, (key, link_content(digest))]))
        return key

    # -- read ------------------------------------------------------------------------------------
    def exists(self, digest: Digest) -> bool:
        return object_exists(self.driver, paths.manifest_revision_link(self.name, digest))

    def pulled_at(self, digest: Digest) -> float:
        """When the revision link was last written (put or `touch`), seconds since the epoch;
        ManifestUnknown when this repository has no such revision."""
        try:
            return self.driver.stat(paths.manifest_revision_link(self.name, digest)).modified
        except PathNotFound:
            raise ManifestUnknown(f"manifest unknown: {digest}", digest=str(digest)) from None

    def resolve(self, reference: str) -> Digest:
        """A tag or digest string → the manifest digest (raises ManifestUnknown / TagUnknown)."""
        if ":" in reference:
            return Digest.parse(reference)
        return self.tags.resolve(reference)

    def get(self, digest: Digest) -> StoredManifest:
        """The manifest if this repository has its revision: its link checked on every call, cache
        or not (believed if seen lately, where the store remembers links: storage.recent_links)."""
        if not self._served_links.present(paths.manifest_revision_link(self.name, digest), lambda: self.exists(digest)):
            raise ManifestUnknown(f"manifest unknown: {digest}", digest=str(digest))
        cached = self.cache.get(self.name, digest) if self.cache is not None else None
        if cached is not None:
            return cached
        try:
            raw = self.blobs.read(digest)
        except BlobUnknown:
            raise ManifestUnknown(f"manifest unknown: {digest}", digest=str(digest)) from None
        stored = StoredManifest(digest, self._media_type(digest, raw), raw)
        if self.cache is not None:
            self.cache.put(self.name, stored)
        return stored

    def parsed(self, digest: Digest) -> Manifest | None:
        """The manifest `digest` as the model reads it (leniently: it was checked when pushed); None
        when this repository does not have it or its bytes are not a manifest."""
        try:
            return self.get(digest).parsed()
        except ManifestUnknown:
            return None

    def get_tagged(self, tag: str) -> StoredManifest:
        """The manifest `tag` points at: TagUnknown unless the tag resolves (as `tags.resolve`
        says), with one check of the revision link instead of resolve's and get's two."""
        digest = self.tags.target(tag)
        try:
            return self.get(digest)
        except ManifestUnknown:
            raise TagUnknown(f"manifest unknown: tag {tag!r} not found in {self.name}", tag=tag) from None

    def _media_type(self, digest: Digest, raw: bytes) -> str:
        try:
            return self.driver.get(paths.manifest_media_type(self.name, digest)).decode()
        except PathNotFound:
            # Pushed without one (every push now), or restored from the CAS: ask the bytes.
            # Stored manifests are read without a size limit: their push was checked against the
            # configured one (limits.max_manifest_bytes), which may exceed the OCI model's default.
            try:
                return parse_manifest(raw, max_size=None, strict=False).media_type
            except OCIValidationError:
                return mt.OCI_MANIFEST

    # -- delete ----------------------------------------------------------------------------------
    def delete(self, digest: Digest) -> None:
        """Remove the manifest revision, every tag pointing at it and its referrer entry."""
        stored = self.get(digest)
        for tag in self.tags.tags_of(digest):
            try:
                if self.tags.resolve(tag) != digest:
                    continue  # moved to another manifest since it was listed: not ours to remove
            except ManifestUnknown:
                continue
            self.tags.discard(tag)
        manifest = stored.parsed()
        subject = manifest.subject if manifest is not None else None
        if subject is not None:
            self.referrers.remove(subject.digest, digest)
        self.withdraw(digest)
        if self.cache is not None:
            self.cache.forget(self.name, digest)  # unknown anyway (get checks the link): free the memory

    def withdraw(self, digest: Digest) -> bool:
        """Remove the revision link (not its tags), keeping the catalog's index exact
        (storage.listing); whether there was one."""
        key = paths.manifest_revision(self.name, digest)
        return self.tags.index.removing_revision(self.name, paths.manifest_revision_link(self.name, digest),
                                                 lambda: delete_quietly(self.driver, key))

    def revisions(self) -> list[Digest]:
        """Every manifest of this repository (for garbage collection)."""
        return digests_below(self.driver, paths.manifest_revisions(self.name))
