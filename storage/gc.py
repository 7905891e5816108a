"""Garbage collection: mark every blob a manifest of any repository needs, sweep the rest.

Marking reads only the tree (revisions, their manifests, referrer entries); sweeping removes CAS
entries nobody marked and the repository links that pointed at them, and the temporary files
interrupted writes left (`Storage.sweep_temp`, never younger than an hour). A blob younger than
`grace_seconds` is never swept, so a push in flight (blobs uploaded, manifest not yet put) keeps
its blobs even though no manifest names them yet.

Repositories a pull-through cache keeps (`ExpiringRepositories`: names below an upstream's host)
also lose, before marking, the manifest revisions nobody pulled for `keep_for` (with their tags),
and keep the blobs pulled within it: the cache rewrites revision and layer links when it serves
them (`ManifestStore.touch`, `RepositoryBlobs.touch`), so a link's age is the time since the last
pull. What the cache no longer holds it fetches again when asked.
"""

from __future__ import annotations

import time
from collections.abc import Set
from dataclasses import dataclass, field

from ocispec.digest import Digest
from ocispec.manifest import referenced_blobs

from . import paths
from .errors import BlobUnknown, ManifestUnknown, TagUnknown
from .links import delete_quietly
from .manifests import ManifestStore
from .repository import Storage


@dataclass
class GcReport:
    marked: int = 0
    swept: list[Digest] = field(default_factory=list)
    unlinked: int = 0
    bytes_freed: int = 0
    temp_removed: int = 0
    #: Manifest revisions of expiring repositories dropped (or, in a dry run, that would be).
    expired_manifests: int = 0


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


def mark(storage: Storage, skip: Set[tuple[str, Digest]] = frozenset()) -> set[Digest]:
    """Every digest still in use: manifests (all revisions) and the blobs they name.

    What a manifest names is read leniently (`referenced_blobs`): a manifest accepted under older,
    looser rules keeps its blobs even if it would be refused today. An index names no blobs; its
    children are revisions of their own, so one whose children are absent (a sparse index) keeps
    only itself. Revisions in `skip` ((repository, digest) pairs: expired ones a dry run left in
    place) count as gone."""
    live: set[Digest] = set()
    for name in storage.repositories():
        manifests = storage.repository(name).manifests
        for digest in manifests.revisions():
            if (name, digest) in skip:
                continue
            live.add(digest)
            try:
                raw = storage.blobs.read(digest)
            except BlobUnknown:
                continue  # a revision whose bytes are gone keeps nothing else alive
            live.update(referenced_blobs(raw))
    return live


def recently_linked(storage: Storage, cutoff: float) -> set[Digest]:
    """Blobs some repository linked (uploaded, mounted, or named by a manifest push) after
    `cutoff`: a push in flight may be about to reference them."""
    recent: set[Digest] = set()
    for info in storage.driver.walk(paths.REPOSITORIES):
        if info.modified > cutoff:
            digest = paths.layer_link_digest(info.key)
            if digest:
                recent.add(digest)
    return recent


def expire(storage: Storage, expiring: ExpiringRepositories, now: float,
           dry_run: bool = False) -> set[tuple[str, Digest]]:
    """Drop the revisions (and the tags on them) of `expiring` repositories last pulled more than
    `keep_for` before `now`; returns them as (repository, digest). A dry run drops nothing."""
    expired: set[tuple[str, Digest]] = set()
    if not expiring.active:
        return expired
    cutoff = now - expiring.keep_for
    for name in storage.repositories():
        if not expiring.covers(name):
            continue
        manifests = storage.repository(name).manifests
        for digest in manifests.revisions():
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
        delete_quietly(manifests.driver, paths.manifest_revision(manifests.name, digest))


def recently_pulled(storage: Storage, expiring: ExpiringRepositories, now: float) -> set[Digest]:
    """Blobs an expiring repository links with a link younger than `keep_for`: pulled within it
    (or fetched, or named by a manifest put), so they are kept whether or not a manifest still
    names them."""
    pulled: set[Digest] = set()
    if not expiring.active:
        return pulled
    cutoff = now - expiring.keep_for
    for name in storage.all_repository_dirs():
        if expiring.covers(name):
            for info in storage.driver.walk(paths.layers(name)):
                digest = paths.layer_link_digest(info.key)
                if digest is not None and info.modified >= cutoff:
                    pulled.add(digest)
    return pulled


def collect(storage: Storage, grace_seconds: float = 3600.0, dry_run: bool = False,
            now: float | None = None, expiring: ExpiringRepositories | None = None) -> GcReport:
    """Sweep blobs no manifest needs that are older than the grace period, both as CAS entries
    and as links. A manifest push validates its blobs by rewriting their links, so a push that
    started within the grace period keeps what it needs; marking again just before the sweep
    narrows the remaining window further.

    With `expiring`, its repositories first lose the revisions not pulled within its `keep_for`
    (`expire`), and blobs they pulled within it stay (`recently_pulled`). A dry run removes
    nothing and reports what would go, expired revisions and what only they kept included."""
    report = GcReport()
    now = now or time.time()
    expired = expire(storage, expiring, now, dry_run) if expiring is not None else set()
    report.expired_manifests = len(expired)
    skip = expired if dry_run else frozenset()
    live = mark(storage, skip)
    if expiring is not None:
        live |= recently_pulled(storage, expiring, now)
    cutoff = now - grace_seconds
    driver = storage.driver
    candidates = []
    for info in list(driver.walk(paths.BLOBS)):
        digest = paths.blob_data_digest(info.key)
        if digest is not None and digest not in live and info.modified <= cutoff:
            candidates.append((digest, info.size))
    if candidates:
        live |= mark(storage, skip) | recently_linked(storage, cutoff)
    report.marked = len(live)
    for digest, size in candidates:
        if digest in live:
            continue
        report.swept.append(digest)
        report.bytes_freed += size
        if not dry_run:
            storage.blobs.delete(digest)
    if not dry_run:
        report.temp_removed = storage.sweep_temp(grace_seconds, now)
    swept = set(report.swept)
    if swept:
        for name in storage.all_repository_dirs():
            for digest in storage.repository(name).blobs.linked():
                if digest in swept:
                    report.unlinked += 1
                    if not dry_run:
                        delete_quietly(driver, paths.layer(name, digest))
    return report
