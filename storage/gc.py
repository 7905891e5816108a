"""Garbage collection: mark every blob a manifest of any repository needs, sweep the rest.

Marking reads only the tree (revisions, their manifests, referrer entries); sweeping removes CAS
entries nobody marked and the repository links that pointed at them, and the temporary files
interrupted writes left (`Storage.sweep_temp`, never younger than an hour). A blob younger than
`grace_seconds` is never swept, so a push in flight (blobs uploaded, manifest not yet put) keeps
its blobs even though no manifest names them yet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ocispec.digest import Digest
from ocispec.manifest import referenced_blobs

from . import paths
from .errors import BlobUnknown
from .links import delete_quietly
from .repository import Storage


@dataclass
class GcReport:
    marked: int = 0
    swept: list[Digest] = field(default_factory=list)
    unlinked: int = 0
    bytes_freed: int = 0
    temp_removed: int = 0


def mark(storage: Storage) -> set[Digest]:
    """Every digest still in use: manifests (all revisions) and the blobs they name.

    What a manifest names is read leniently (`referenced_blobs`): a manifest accepted under older,
    looser rules keeps its blobs even if it would be refused today. An index names no blobs; its
    children are revisions of their own, so one whose children are absent (a sparse index) keeps
    only itself."""
    live: set[Digest] = set()
    for name in storage.repositories():
        manifests = storage.repository(name).manifests
        for digest in manifests.revisions():
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


def collect(storage: Storage, grace_seconds: float = 3600.0, dry_run: bool = False,
            now: float | None = None) -> GcReport:
    """Sweep blobs no manifest needs that are older than the grace period, both as CAS entries
    and as links. A manifest push validates its blobs by rewriting their links, so a push that
    started within the grace period keeps what it needs; marking again just before the sweep
    narrows the remaining window further."""
    report = GcReport()
    live = mark(storage)
    cutoff = (now or time.time()) - grace_seconds
    driver = storage.driver
    candidates = []
    for info in list(driver.walk(paths.BLOBS)):
        digest = paths.blob_data_digest(info.key)
        if digest is not None and digest not in live and info.modified <= cutoff:
            candidates.append((digest, info.size))
    if candidates:
        live |= mark(storage) | recently_linked(storage, cutoff)
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
