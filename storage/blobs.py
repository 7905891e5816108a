"""Blobs: one content-addressed copy of each (the CAS) plus per-repository links.

A repository reaches a blob only through its link; that link is the access check. A blob's CAS
entry appears only by `RepositoryBlobs.link_verified` placing bytes whose size and digest were
verified (an upload finished or moved into place, a fill committed) or by `put_verified`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from ocispec.digest import Digest

from . import paths
from .driver.base import DriverCapabilities, StorageDriver
from .errors import BlobUnknown, PathNotFound, StorageError
from .fill import BlobFill
from .links import delete_quietly, digests_below, object_exists, write_link
from .recent_links import NO_MEMORY, RecentLinks
from .sweeping import SweepWatch
from .usage import UsageIndex, forget

#: How often a write links again what a collection unlinked before giving up (one is the norm).
_SETTLE_ROUNDS = 3
#: Blob sizes read at once where each is a round trip (S3).
_SIZE_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: Digest
    size: int


class BlobStore:
    """The global CAS. Callers are responsible for the per-repository access check."""

    def __init__(self, driver: StorageDriver, recent_links: RecentLinks = NO_MEMORY) -> None:
        self.driver = driver
        #: Links lately seen, which `serving` views may believe (storage.recent_links).
        self.recent_links = recent_links
        #: Quota usage kept current as repositories link blobs (storage.usage); None: not counted.
        self.usage: UsageIndex | None = None
        #: What every write that links content asks before it counts (storage.sweeping).
        self.sweeps = SweepWatch(driver)

    def stat(self, digest: Digest) -> BlobInfo:
        try:
            return BlobInfo(digest, self.driver.head(paths.blob_data(digest)).size)
        except PathNotFound:
            raise BlobUnknown(f"blob unknown: {digest}", digest=str(digest)) from None

    def exists(self, digest: Digest) -> bool:
        return object_exists(self.driver, paths.blob_data(digest))

    def open(self, digest: Digest, offset: int = 0) -> BinaryIO:
        try:
            return self.driver.reader(paths.blob_data(digest), offset)
        except PathNotFound:
            raise BlobUnknown(f"blob unknown: {digest}", digest=str(digest)) from None

    def open_sized(self, digest: Digest) -> tuple[BinaryIO, int]:
        """A stream of the whole blob and its size, from one backend call."""
        try:
            return self.driver.opened(paths.blob_data(digest))
        except PathNotFound:
            raise BlobUnknown(f"blob unknown: {digest}", digest=str(digest)) from None

    def read(self, digest: Digest) -> bytes:
        """Whole content, for small blobs (manifests) only."""
        try:
            return self.driver.get(paths.blob_data(digest))
        except PathNotFound:
            raise BlobUnknown(f"blob unknown: {digest}", digest=str(digest)) from None

    def url_for(self, digest: Digest) -> str | None:
        return self.driver.url_for(paths.blob_data(digest))

    def put_verified(self, digest: Digest, data: bytes) -> None:
        """Store small content whose digest the caller computed from `data` itself."""
        self.driver.put_many(self.verified_writes(digest, data))

    def verified_writes(self, digest: Digest, data: bytes) -> list[tuple[str, bytes]]:
        """The writes `put_verified` makes (none when the CAS has the blob), for a caller that
        makes them durable together with its own (`StorageDriver.put_many`)."""
        return [] if self.exists(digest) else [(paths.blob_data(digest), data)]

    def delete(self, digest: Digest) -> None:
        """Remove the CAS entry (garbage collection only: links may still name it)."""
        delete_quietly(self.driver, paths.blob_dir(digest))
        forget(self.driver, [digest])  # no repository links it any more: no quota counts it


class RepositoryBlobs:
    """One repository's view of the CAS, through its links: every read (`stat`, `stat_served`,
    `open`, `open_sized`, `url_for`) checks this repository's link first, so a blob another
    repository pushed is BlobUnknown here whatever order a caller makes its calls in. This is the
    only way the registry reaches blobs.

    Content enters it only verified: an upload (`Repository.uploads`), a `fill` (a blob that
    arrives whole, straight into the CAS), or a link to what the CAS already holds (`mount_from`,
    `adopt_existing`).

    A view made `serving` (the one `Repository.blobs` is) lets its reads believe a link seen lately
    (storage.recent_links: on S3, within `storage.link_cache_seconds`); `has`, `intact`, `stat`,
    `touch` and every view made without it look at the link each time, which is what a push's
    checks must do."""

    def __init__(self, store: BlobStore, name: str, *, serving: bool = False) -> None:
        self.store = store
        self.name = name
        #: What the reads' link check asks: the store's memory of links (serving), or one that never remembers.
        self._served_links = store.recent_links if serving else NO_MEMORY

    @property
    def driver(self) -> StorageDriver:
        return self.store.driver

    @property
    def capabilities(self) -> DriverCapabilities:
        return self.store.driver.capabilities

    def has(self, digest: Digest) -> bool:
        return object_exists(self.driver, paths.layer_link(self.name, digest))

    def stat(self, digest: Digest) -> BlobInfo:
        """The blob's size, its link looked at whatever the view: what a blob HEAD answers, which is
        how push clients decide whether to upload it."""
        self._require_link(digest, NO_MEMORY)
        return self.store.stat(digest)

    def stat_served(self, digest: Digest) -> BlobInfo:
        """`stat` for a download about to read the bytes (a range, a redirect): its link checked as
        the reads check it."""
        self._require_link(digest, self._served_links)
        return self.store.stat(digest)

    def open(self, digest: Digest, offset: int = 0) -> BinaryIO:
        """A stream of the blob's bytes from `offset`; the caller closes it."""
        self._require_link(digest, self._served_links)
        return self.store.open(digest, offset)

    def open_sized(self, digest: Digest) -> tuple[BinaryIO, int]:
        """A stream of the whole blob and its size (one call to storage beside the link check)."""
        self._require_link(digest, self._served_links)
        return self.store.open_sized(digest)

    def url_for(self, digest: Digest) -> str | None:
        """A short-lived URL to fetch the blob from the backend directly, or None when the driver
        gives no URLs (then nothing is looked up: there is nothing to hand out)."""
        if not self.capabilities.presigned_urls:
            return None
        self._require_link(digest, self._served_links)
        return self.store.url_for(digest)

    def _require_link(self, digest: Digest, links: RecentLinks) -> None:
        """BlobUnknown unless this repository links `digest`, as `links` answers it: the view's own
        memory for the reads (`_served_links`), NO_MEMORY (a look) for `stat` and `touch`."""
        key = paths.layer_link(self.name, digest)
        if not links.present(key, lambda: object_exists(self.driver, key)):
            raise BlobUnknown(f"blob unknown to repository {self.name}: {digest}", digest=str(digest))

    def link(self, digest: Digest) -> None:
        key = paths.layer_link(self.name, digest)
        self.store.recent_links.written(key, lambda: write_link(self.driver, key, digest))

    def unlink(self, digest: Digest) -> None:
        if not delete_quietly(self.driver, paths.layer(self.name, digest)):
            raise BlobUnknown(f"blob unknown to repository {self.name}: {digest}", digest=str(digest))
        if self.store.usage is not None:
            self.store.usage.unlinked(self.name, digest)

    def intact(self, digest: Digest) -> bool:
        """Linked here and its bytes in the CAS."""
        return self.has(digest) and self.store.exists(digest)

    def link_new(self, digest: Digest, since: float, size: int | None = None) -> None:
        """Link a blob this repository may not link yet, counting it for the quotas first
        (storage.usage: a crash in between over-counts, never under-counts). `since`: when the
        caller first relied on its bytes being stored (`relying`). BlobUnknown, and no link left,
        when a garbage collection removed the bytes meanwhile (`settle_links`)."""
        if self.store.usage is not None:
            self.store.usage.linking(self.name, digest, size)
        self.link(digest)
        self.settle_links({digest}, since)

    def relying(self) -> float:
        """The time to hand `link_new` and `settle_links`, taken before the caller first looks at
        what it will link (storage.sweeping: a collection that ended since is checked after)."""
        return self.store.sweeps.clock()

    def link_verified(self, digest: Digest, size: int, place: Callable[[], object],
                      drop: Callable[[], object]) -> BlobInfo:
        """Link bytes whose size and digest were verified, having `place` put them in the CAS
        unless it holds them already (then `drop` discards them). When the CAS's copy is an old
        one, ours is kept until the link settled: if a garbage collection removed that copy
        meanwhile (storage.sweeping), ours takes its place."""
        since = self.relying()
        if not self.store.exists(digest):
            place()  # ours, new in the CAS: no collection takes it
            self.link_new(digest, since, size)
            return BlobInfo(digest, size)
        try:
            self.link_new(digest, since, size)
        except BlobUnknown:
            place()
            self.link_new(digest, since, size)
            return BlobInfo(digest, size)
        drop()
        return BlobInfo(digest, size)

    def settle_links(self, digests: set[Digest], since: float) -> None:
        """After writing links to `digests`, relied on as stored since `since` (`relying`): wait
        out any garbage collection that may be deleting them (storage.sweeping) and make sure links
        and bytes are all still there, linking again what a collection unlinked. BlobUnknown when
        it removed the bytes of one (its link is removed: a link to nothing serves no one)."""
        pending = set(digests)
        for _ in range(_SETTLE_ROUNDS):
            missing = self.store.sweeps.settle(pending, self.intact, since)
            if not missing:
                return
            lost = sorted((d for d in missing if not self.store.exists(d)), key=str)
            if lost:
                for digest in lost:
                    delete_quietly(self.driver, paths.layer(self.name, digest))
                raise BlobUnknown(f"blob {lost[0]} was removed by garbage collection while {self.name} linked it",
                                  digest=str(lost[0]))
            for digest in missing:
                self.link(digest)
            pending = missing
        raise StorageError(f"garbage collection kept unlinking blobs of {self.name} while they were linked; retry")

    def mount_from(self, source: RepositoryBlobs, digest: Digest) -> bool:
        """Link a blob the source repository has; False (nothing left written) when it has not,
        or a garbage collection removed it meanwhile."""
        since = self.relying()
        if not source.has(digest) or not self.store.exists(digest):
            return False
        try:
            self.link_new(digest, since)
        except BlobUnknown:
            return False
        return True

    def adopt_existing(self, digest: Digest) -> bool:
        """Link a blob the CAS already holds (another repository or replica stored it, so its
        bytes were verified then); False, and nothing left written, when the CAS has no such
        blob (or a garbage collection removed it meanwhile). For content whose digest this
        repository legitimately names (a pull-through cache's manifest): it is no access check,
        unlike `mount_from`."""
        since = self.relying()
        if not self.store.exists(digest):
            return False
        try:
            self.link_new(digest, since)
        except BlobUnknown:
            return False
        return True

    def touch(self, digest: Digest) -> None:
        """Mark a linked blob as just pulled: its link is rewritten (garbage collection of cached
        repositories keeps blobs with young links, storage.gc). BlobUnknown when this repository
        does not link it: a touch never grants access, so it looks at the link, never believes it."""
        self._require_link(digest, NO_MEMORY)
        self.link(digest)

    def fill(self, digest: Digest, size: int | None = None) -> BlobFill:
        """Start a verified streaming write of one blob into this repository (storage.fill): it
        becomes visible here only when `commit()` verified `size` and `digest`."""
        return BlobFill(self, digest, size)

    def linked(self) -> list[Digest]:
        """Every blob this repository links (for garbage collection)."""
        return digests_below(self.driver, paths.layers(self.name))

    def linked_size(self) -> int:
        """The bytes of every blob this repository links, each counted once (what quotas count; the
        console's repository sizes): one listing, then the blobs' sizes, concurrently on a driver
        whose small reads are round trips. A blob removed meanwhile counts nothing."""
        def size(digest: Digest) -> int:
            try:
                return self.store.stat(digest).size
            except StorageError:
                return 0

        digests = self.linked()
        if self.capabilities.fast_small_reads or len(digests) < 2:
            return sum(size(d) for d in digests)
        with ThreadPoolExecutor(max_workers=min(_SIZE_CONCURRENCY, len(digests))) as pool:
            return sum(pool.map(size, digests))
