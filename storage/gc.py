"""Garbage collection, online: mark what is in use, sweep the rest, while pushes and pulls go on.

One collection (`collect`):

1. takes the lease (storage.lease) unless another collector holds it, and publishes its sweep
   notice (storage.sweeping): from here on every writer that links content tells it;
2. walks the repositories once (storage.marking) and reads each manifest once: every revision,
   what it names, and every blob linked within the grace period is in use;
3. walks the CAS once: a blob neither in use nor written within the grace period is a candidate;
4. dooms the candidates, reads what writers linked meanwhile (they are spared), and deletes the
   rest in batches (on S3, DeleteObjects of up to 1,000 keys), renewing notice and lease before
   each batch; then the links to them, their quota markers, and old temporary files.

The safety rule, which docs/lifecycle.md explains: a push that was answered success never loses
a blob or manifest it refers to, however long the collection runs and however old reused bytes
are; a push whose manifest arrives within `grace_seconds` of its blobs' upload always succeeds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ocispec.digest import Digest

from . import paths
from .lease import Lease
from .marking import ExpiringRepositories, TreeSnapshot, expire, live, recently_pulled
from .repository import Storage
from .sweeping import Collection
from .usage import forget

#: The coarsest modification time a store reports (seconds): S3 gives whole seconds.
MTIME_GRANULARITY = 1.0
#: Keys deleted per call (S3's DeleteObjects takes at most 1,000).
DELETE_BATCH = 1000

#: progress(stage, done, total): stage is "walk", "manifests", "blobs" or "sweep"; total 0 when unknown.
GcProgress = Callable[[str, int, int], None]


@dataclass
class GcReport:
    manifests_kept: int = 0
    blobs_kept: int = 0
    swept: list[Digest] = field(default_factory=list)
    unlinked: int = 0
    bytes_freed: int = 0
    temp_removed: int = 0
    #: Manifest revisions of expiring repositories dropped (or, in a dry run, that would be).
    expired_manifests: int = 0
    #: Candidates spared because a push linked them while the collection ran.
    spared: int = 0
    seconds: float = 0.0
    #: Another collector held the lease: this one did nothing.
    held_by: str | None = None
    held_until: float = 0.0


def collect(storage: Storage, grace_seconds: float = 3600.0, dry_run: bool = False,
            now: float | None = None, expiring: ExpiringRepositories | None = None,
            lease_ttl: float = 600.0, progress: GcProgress | None = None) -> GcReport:
    """One collection (module docstring). `now` sets the clock the grace period and `keep_for`
    count from (tests); a dry run takes no lease, removes nothing and reports what would go."""
    started = time.monotonic()
    report = GcReport()
    driver = storage.driver
    holder = uuid.uuid4().hex
    lease = Lease(driver, holder, lease_ttl)
    sweep = Collection(driver, holder, lease_ttl)
    if not dry_run:
        held = lease.acquire()
        if held is not None:
            report.held_by, report.held_until = held.holder, held.expires
            return report
        sweep.begin()
    try:
        _collect(storage, report, grace_seconds, dry_run, now or time.time(), expiring, lease, sweep, progress)
    finally:
        if not dry_run:
            try:
                sweep.end()
            finally:
                lease.release()  # whatever withdrawing the notice met: the next collector need not wait
    report.seconds = time.monotonic() - started
    return report


def _collect(storage: Storage, report: GcReport, grace_seconds: float, dry_run: bool, now: float,
             expiring: ExpiringRepositories | None, lease: Lease, sweep: Collection,
             progress: GcProgress | None) -> None:
    driver = storage.driver

    def hold_on() -> None:
        """Renew notice and lease once a third of their ttl passed; SweepExpired once the notice
        expired (then nothing more may be deleted). Before every call that deletes, too."""
        if not dry_run and sweep.keep_alive():
            lease.renew()

    def tell(stage: str, done: int, total: int) -> None:
        hold_on()
        if progress is not None:
            progress(stage, done, total)

    snapshot = TreeSnapshot.take(driver, lambda seen: tell("walk", seen, 0))
    walked = len(snapshot.revisions) + len(snapshot.layer_links)
    tell("walk", walked, walked)
    if expiring is not None and not dry_run:
        sweep.may_delete()  # expired revisions go outside the doomed list
    expired = (expire(driver, storage.blobs, snapshot, expiring, now, dry_run) if expiring is not None else set())
    report.expired_manifests = len(expired)
    for owned in expired:
        snapshot.revisions.pop(owned, None)
    # Stores may keep modification times to the whole second (S3's Last-Modified): a time read back
    # can be up to a second earlier than the write, so the cutoff is that much earlier too, and
    # nothing written within the grace period ever looks older than it. (No grace period protects
    # nothing in flight: then everything unreferenced goes.)
    cutoff = now - grace_seconds - (MTIME_GRANULARITY if grace_seconds > 0 else 0.0)
    in_use = live(storage.blobs, snapshot, cutoff, progress=lambda done, total: tell("manifests", done, total))
    tell("manifests", len(snapshot.revisions), len(snapshot.revisions))
    if expiring is not None:
        in_use |= recently_pulled(snapshot, expiring, now)
    report.manifests_kept = len(snapshot.revisions)
    candidates: dict[Digest, int] = {}
    stored = 0
    for info in driver.walk(paths.BLOBS):
        digest = paths.blob_data_digest(info.key)
        if digest is None:
            continue
        stored += 1
        if stored % 5000 == 0:
            tell("blobs", stored, 0)
        if digest not in in_use and info.modified <= cutoff:
            candidates[digest] = info.size
    tell("blobs", stored, stored)
    if candidates and not dry_run:
        sweep.doom(candidates)
        for digest in sweep.kept():
            if candidates.pop(digest, None) is not None:
                report.spared += 1
    report.blobs_kept = stored - len(candidates)
    doomed = sorted(candidates, key=str)
    links: dict[Digest, list[str]] = {}
    for name, digest in snapshot.layer_links:
        if digest in candidates:
            links.setdefault(digest, []).append(paths.layer_link(name, digest))
    for start in range(0, len(doomed), DELETE_BATCH):
        batch = doomed[start:start + DELETE_BATCH]
        tell("sweep", len(report.swept), len(doomed))
        batch_links = [key for digest in batch for key in links.get(digest, ())]
        if not dry_run:
            # Links first: a collector dying in between leaves bytes nobody links (the next one
            # takes them), never a link that a writer's check passes but that names nothing.
            for at in range(0, len(batch_links), DELETE_BATCH):
                hold_on()
                driver.delete_many(batch_links[at:at + DELETE_BATCH])
            hold_on()
            driver.delete_many([paths.blob_data(digest) for digest in batch])
            forget(driver, batch)
        report.swept.extend(batch)
        report.unlinked += len(batch_links)
        report.bytes_freed += sum(candidates[digest] for digest in batch)
    if doomed and progress is not None:
        progress("sweep", len(doomed), len(doomed))
    if not dry_run:
        report.temp_removed = storage.sweep_temp(grace_seconds, now)
