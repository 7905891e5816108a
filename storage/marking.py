"""Marking for garbage collection: one walk of the repositories' tree, then the set of digests
still in use.

The walk (`TreeSnapshot.take`) is one listing of `v1/repositories` (on S3, pages of 1,000 keys
with no delimiter): every manifest revision and layer link with the time it was last written.
What is in use (`live`): every revision, what its manifest names (read leniently, so a manifest
accepted under older rules keeps its blobs), and every blob some repository linked after the
cutoff (an upload whose manifest has not arrived yet). Manifest bytes are read once per digest
however many repositories hold it, 16 at a time where small reads are round trips.

Repositories a pull-through cache keeps (`ExpiringRepositories`: names below an upstream's host)
first lose the revisions nobody pulled for `keep_for` (`expire`), and keep the blobs pulled
within it (`recently_pulled`): the cache rewrites revision and layer links when it serves them,
so a link's age is the time since the last pull.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ocispec.digest import Digest
from ocispec.manifest import referenced_blobs

from . import paths
from .blobs import BlobStore
from .driver.base import StorageDriver
from .errors import BlobUnknown, ManifestUnknown, PathNotFound, TagUnknown
from .manifests import ManifestStore

Owned = tuple[str, Digest]  # (repository, digest)
_READ_CONCURRENCY = 16


@dataclass
class TreeSnapshot:
    """Every revision link and layer link of the store with its last write time."""

    revisions: dict[Owned, float] = field(default_factory=dict)
    layer_links: dict[Owned, float] = field(default_factory=dict)

    @classmethod
    def take(cls, driver: StorageDriver, progress: Callable[[int], None] | None = None) -> TreeSnapshot:
        snapshot = cls()
        seen = 0
        try:
            for info in driver.walk(paths.REPOSITORIES):
                seen += 1
                if progress is not None and seen % 5000 == 0:
                    progress(seen)
                owner = paths.layer_link_owner(info.key)
                if owner is not None:
                    snapshot.layer_links[owner] = info.modified
                    continue
                owner = paths.manifest_revision_owner(info.key)
                if owner is not None:
                    snapshot.revisions[owner] = info.modified
        except PathNotFound:
            pass  # an empty store
        return snapshot

    @property
    def repositories(self) -> set[str]:
        return {name for name, _ in self.revisions}


@dataclass(frozen=True, slots=True)
class ExpiringRepositories:
    """Repositories whose content expires: every name below one of `prefixes` (`docker.io` covers
    `docker.io/library/redis`, never `docker.io` itself nor `docker.iox/a`), whose manifest
    revisions last pulled more than `keep_for` seconds ago are dropped. `keep_for <= 0`: nothing
    ever expires."""

    prefixes: tuple[str, ...]
    keep_for: float

    @property
    def active(self) -> bool:
        return self.keep_for > 0 and any(p.strip("/") for p in self.prefixes)

    def covers(self, name: str) -> bool:
        return any(p.strip("/") and name.startswith(p.strip("/") + "/") for p in self.prefixes)


def expire(driver: StorageDriver, blobs: BlobStore, snapshot: TreeSnapshot, expiring: ExpiringRepositories,
           now: float, dry_run: bool = False) -> set[Owned]:
    """Drop the revisions (and the tags on them) of `expiring` repositories last pulled more than
    `keep_for` before `now`; returns them. A dry run drops nothing. A revision pulled since the
    snapshot (its link rewritten) is spared."""
    expired: set[Owned] = set()
    if not expiring.active:
        return expired
    cutoff = now - expiring.keep_for
    for (name, digest), written in snapshot.revisions.items():
        if not expiring.covers(name) or written >= cutoff:
            continue
        manifests = ManifestStore(driver, blobs, name)
        try:
            if manifests.pulled_at(digest) >= cutoff:
                continue
        except ManifestUnknown:
            continue  # removed meanwhile
        expired.add((name, digest))
        if not dry_run:
            _drop(manifests, digest)
    return expired


def _drop(manifests: ManifestStore, digest: Digest) -> None:
    try:
        manifests.delete(digest)
    except ManifestUnknown:
        # Linked but its bytes are gone (no pull can be served from it): its tags and link go too.
        for tag in manifests.tags.tags_of(digest):
            try:
                manifests.tags.delete(tag)
            except TagUnknown:
                pass
        manifests.withdraw(digest)


def recently_pulled(snapshot: TreeSnapshot, expiring: ExpiringRepositories, now: float) -> set[Digest]:
    """Blobs an expiring repository links with a link younger than `keep_for`."""
    if not expiring.active:
        return set()
    cutoff = now - expiring.keep_for
    return {digest for (name, digest), written in snapshot.layer_links.items()
            if written >= cutoff and expiring.covers(name)}


def live(blobs: BlobStore, snapshot: TreeSnapshot, cutoff: float, skip: Set[Owned] = frozenset(),
         progress: Callable[[int, int], None] | None = None) -> set[Digest]:
    """Every digest in use (module docstring). Revisions in `skip` (expired ones a dry run left in
    place) count as gone. An index names no blobs: its children are revisions of their own."""
    manifests = {owned[1] for owned in snapshot.revisions if owned not in skip}
    in_use: set[Digest] = set(manifests)
    in_use.update(digest for (_, digest), written in snapshot.layer_links.items() if written > cutoff)
    for done, names in enumerate(_read_references(blobs, sorted(manifests, key=str)), start=1):
        in_use.update(names)
        if progress is not None and done % 200 == 0:
            progress(done, len(manifests))
    return in_use


def _read_references(blobs: BlobStore, digests: list[Digest]) -> Iterable[set[Digest]]:
    def names(digest: Digest) -> set[Digest]:
        try:
            return referenced_blobs(blobs.read(digest))
        except BlobUnknown:
            return set()  # a revision whose bytes are gone keeps nothing else alive

    if blobs.driver.capabilities.fast_small_reads or len(digests) < 2:
        return map(names, digests)
    with ThreadPoolExecutor(max_workers=_READ_CONCURRENCY) as pool:
        return list(pool.map(names, digests))
