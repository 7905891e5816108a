"""Sweep notices: how a garbage collection and the writers that link content agree, so that a
collection never deletes what a write that succeeded refers to, however long it runs and however
old the reused bytes are.

A collection publishes its notice (`v1/gc/sweeps/<collector>`, phase *marking*) before it reads
the tree, so everything linked before then is seen by its marking. Before deleting it writes the
digests it means to delete (`v1/gc/doomed/<collector>`), switches the notice to *deleting*, and
only then reads what writers asked it to keep (`v1/gc/kept/<collector>/…`).

When it ends, if it deleted anything, it leaves a *finished mark* (`v1/gc/sweeps/<collector>.finished.<ms>`,
when it ended, in the key) before withdrawing its notice; the next collections remove marks older
than FINISHED_KEEP, and turn the notice of a collector that died into such a mark (ended: its
expiry).

A writer notes the time before it first relies on some digests being stored (checks their bytes or
a link), links (a layer link, a manifest revision), and then calls `SweepWatch.settle` with the
digests and that time:

- a collection that ended after that time (its finished mark says so, CLOCK_MARGIN allowed; or
  its notice was listed but gone when read): it may have begun before our link and deleted what
  we checked after we checked it, so the writer checks the digests are still there (no wait);
- no notice: any collection that starts later publishes its notice after our link was written,
  so its marking sees the link;
- a notice in *marking*: the writer records its digests as kept for that collection, then reads
  the notice again; still *marking* means the collection reads the keeps later, so it spares them;
- a notice in *deleting* whose doomed list names one of the digests (on the first read or after
  keeping), or a collection that finished between the two reads: the digest may be deleted.
  The writer waits until that collection's notice is gone (or expired: its collector died), then
  checks the bytes are still there; `settle` returns the ones that are not, and the writer
  restores them (it has them) or fails without having answered success.

Both sides only rely on each storage call seeing the effects of calls that completed before it
(S3 has been strongly consistent since 2020; SeaweedFS and files are too). A collection keeps its
notice alive while it marks and before each batch of deletes; once it let it expire it deletes
nothing, and each call that deletes starts with at least two thirds of the ttl left: a writer
that outwaited an expired notice (CLOCK_MARGIN after its expiry) never races a late delete.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ocispec.digest import Digest
from ocispec.errors import OCIValidationError

from . import paths
from .driver.base import StorageDriver
from .errors import PathNotFound, StorageError
from .links import delete_quietly

log = logging.getLogger("cargobay.storage")

MARKING = "marking"
DELETING = "deleting"
#: How far the clocks of replicas and of the backend may disagree (seconds); a notice counts as
#: expired only this long after the expiry it states.
CLOCK_MARGIN = 30.0
#: How long a finished collection's mark stays (seconds). A writer that began relying on its
#: digests longer ago than this, less CLOCK_MARGIN, cannot know every collection that ended since,
#: and checks them all.
FINISHED_KEEP = 600.0
#: The longest pause between two polls of a notice a writer waits out (seconds).
_POLL_MAX = 2.0
#: How many digests a writer checks at once after a collection, where each look is a round trip.
_LOOKS_AT_ONCE = 16


class SweepExpired(StorageError):
    """The collection could not renew its notice in time: it must stop deleting."""


@dataclass(frozen=True, slots=True)
class Notice:
    holder: str
    phase: str
    expires: float

    def expired(self, now: float) -> bool:
        return now > self.expires + CLOCK_MARGIN


def read_notice(driver: StorageDriver, holder: str) -> Notice | None:
    """A collection's notice; None when it has none (finished, or never started) or it is debris."""
    try:
        return _parse_notice(holder, driver.get(paths.gc_sweep(holder)))
    except PathNotFound:
        return None


def _parse_notice(holder: str, body: bytes) -> Notice | None:
    """The notice `body` says, or None for debris (half-written by hand or by another tool, or an
    expiry that is no time at all): no collection speaks through it."""
    try:
        raw = json.loads(body)
        notice = Notice(holder, str(raw["phase"]), float(raw["expires"]))
    except (ValueError, KeyError, TypeError):
        return None
    return notice if math.isfinite(notice.expires) else None


class Collection:
    """The collector's side of the protocol (module docstring): begin, doom, kept, renew, end."""

    def __init__(self, driver: StorageDriver, holder: str, ttl: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.driver = driver
        self.holder = holder
        self.ttl = ttl
        self.clock = clock
        self.expires = 0.0
        self.phase = MARKING
        #: Whether this collection may delete anything writers rely on (`doom`, `may_delete`): only
        #: then does its end leave a finished mark that makes writers look again.
        self._deletes = False

    def begin(self) -> None:
        """Publish the notice: from here on every writer that links content tells us."""
        self._publish(MARKING)

    def doom(self, digests: Iterable[Digest]) -> None:
        """Record what this collection may delete, then say it is deleting. Call `kept` after."""
        self.keep_alive()
        listed = sorted(str(d) for d in digests)
        self._deletes = self._deletes or bool(listed)
        self.driver.put(paths.gc_doomed(self.holder), json.dumps(listed).encode())
        self._publish(DELETING)

    def kept(self) -> set[Digest]:
        """The digests writers linked while we marked (read after `doom`, never before)."""
        found: set[Digest] = set()
        try:
            for info in self.driver.walk(paths.gc_kept(self.holder)):
                digest = paths.gc_kept_digest_of(info.key)
                if digest is not None:
                    found.add(digest)
        except PathNotFound:
            pass
        return found

    def may_delete(self) -> None:
        """Say this collection deletes something outside `doom` (expired revisions of the cache):
        its end then leaves a finished mark as well."""
        self._deletes = True

    def keep_alive(self) -> bool:
        """Call often while marking and before each call that deletes: the notice is extended once
        a third of its ttl has passed (True when it was). SweepExpired when it expired already:
        writers may have stopped telling us or waiting on us, so nothing more may be deleted."""
        now = self.clock()
        if now > self.expires:
            raise SweepExpired(f"garbage collection {self.holder} paused past its notice's expiry; "
                               "stopped before deleting more")
        if now < self.expires - self.ttl * 2 / 3:
            return False
        self._publish(self.phase)
        return True

    def end(self) -> None:
        """Leave the finished mark, then withdraw the notice (writers stop waiting on it at once),
        then what this and dead collections left in `v1/gc`. The mark comes first: a writer whose
        link this collection deleted unseen (it linked after the marking, before the deletes)
        learns from it that it must check. If it cannot be written the notice stays, and writers
        treat it as a dead collector's. Only mark and notice must be done: the rest is
        bookkeeping, and what cannot be removed now (a writer recording a keep into it at this very
        moment) the next collection removes as a dead collector's. A collection that deleted
        nothing leaves no mark: no writer needs to look again for it."""
        if self._deletes:
            self.driver.put(paths.gc_sweep_finished(self.holder, self.clock()), b"")
        delete_quietly(self.driver, paths.gc_sweep(self.holder))
        try:
            delete_quietly(self.driver, paths.gc_doomed(self.holder))
            delete_quietly(self.driver, paths.gc_kept(self.holder))
            self._remove_dead()
        except (StorageError, OSError) as exc:
            log.warning("gc %s: left some of its bookkeeping for the next collection (%s)", self.holder, exc)

    def _publish(self, phase: str) -> None:
        self.phase = phase
        self.expires = self.clock() + self.ttl
        body = {"holder": self.holder, "phase": phase, "expires": self.expires}
        self.driver.put(paths.gc_sweep(self.holder), json.dumps(body).encode())

    def _remove_dead(self) -> None:
        """A dead collector's notice becomes a finished mark (it deleted nothing after its expiry);
        marks older than FINISHED_KEEP go; then the doomed lists and keeps of collections that are
        no more."""
        now = self.clock()
        listed = _listed(self.driver)
        for holder in listed.holders:
            notice = read_notice(self.driver, holder)
            if notice is not None and notice.expired(now):
                self.driver.put(paths.gc_sweep_finished(holder, notice.expires), b"")
                delete_quietly(self.driver, paths.gc_sweep(holder))
        for key, (_, ended) in listed.finished.items():
            # Old, or from further ahead than any clock may be (no writer could need it then either).
            if now > ended + FINISHED_KEEP + CLOCK_MARGIN or ended > now + FINISHED_KEEP:
                delete_quietly(self.driver, key)
        # Whose bookkeeping is there, listed before who is alive: a collection that begins after
        # this listing has no keeps in it yet (writers keep only for a notice they read), so a
        # live collection's keeps are never taken for a dead one's.
        leftovers = [(prefix, _listed_holders(self.driver, prefix)) for prefix in (paths.GC_DOOMED, paths.GC_KEPT)]
        alive = set(_listed(self.driver).holders)
        for prefix, holders in leftovers:
            for holder in holders:
                if holder not in alive:
                    delete_quietly(self.driver, f"{prefix}/{holder}")


class SweepWatch:
    """The writers' side (module docstring). One per store; safe to share between threads."""

    def __init__(self, driver: StorageDriver, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.driver = driver
        self.clock = clock
        self.sleep = sleep
        self._doomed: dict[str, frozenset[Digest]] = {}

    def settle(self, digests: Iterable[Digest], exists: Callable[[Digest], bool], since: float) -> set[Digest]:
        """Call right after writing links that rely on `digests`; `since`: this watch's `clock`
        before the writer first relied on any of them being stored (checked their bytes or links).
        Returns the digests a collection may have deleted meanwhile and that are gone now
        (`exists` says), after every such collection ended; empty in the common case, at the cost
        of one listing."""
        wanted = frozenset(digests)
        if not wanted:
            return set()
        first, ended = self._notices()
        # Collections that ended since we relied on these may have deleted them unseen: look again.
        unsure = (any(at >= since - CLOCK_MARGIN for at in ended.values())
                  or self.clock() - since > FINISHED_KEEP - CLOCK_MARGIN)
        if not first and not unsure:
            return set()
        at_risk: dict[str, set[Digest]] = {}
        marking = [n for n in first if n.phase == MARKING]
        for notice in first:
            if notice.phase == DELETING:
                self._add_risk(at_risk, notice.holder, self._doomed_among(notice.holder, wanted))
        if marking:
            for notice in marking:
                for digest in wanted:
                    self.driver.put(paths.gc_kept_digest(notice.holder, digest), b"")
            again = {n.holder: n for n in self._notices()[0]}
            for notice in marking:
                later = again.get(notice.holder)
                if later is None:
                    # It finished between our reads: it may have read the keeps before we wrote them.
                    self._add_risk(at_risk, notice.holder, set(wanted))
                elif later.phase == DELETING:
                    self._add_risk(at_risk, notice.holder, self._doomed_among(notice.holder, wanted))
        for holder in at_risk:
            self._wait_out(holder)
        risky = set(wanted) if unsure else set()
        for digests_at_risk in at_risk.values():
            risky |= digests_at_risk
        return self._gone(risky, exists)

    def _gone(self, digests: set[Digest], exists: Callable[[Digest], bool]) -> set[Digest]:
        """Which of `digests` are not there: concurrently where each look is a round trip (on S3 a
        manifest of a hundred layers would otherwise wait for two hundred HEADs in a row)."""
        if len(digests) < 2 or self.driver.capabilities.fast_small_reads:
            return {d for d in digests if not exists(d)}
        ordered = sorted(digests, key=str)
        with ThreadPoolExecutor(max_workers=min(_LOOKS_AT_ONCE, len(ordered))) as pool:
            return {d for d, there in zip(ordered, pool.map(exists, ordered), strict=True) if not there}

    @staticmethod
    def _add_risk(at_risk: dict[str, set[Digest]], holder: str, digests: Iterable[Digest]) -> None:
        found = set(digests)
        if found:
            at_risk.setdefault(holder, set()).update(found)

    def _notices(self) -> tuple[list[Notice], dict[str, float]]:
        """The live notices, and the collections that ended (holder: when, its clock): a finished
        mark, a notice listed but gone when read (it ended just now), or one expired (its
        collector died; it deleted nothing after its expiry)."""
        now = self.clock()
        listed = _listed(self.driver)
        ended = dict(listed.finished.values())
        notices = []
        for holder in listed.holders:
            try:
                notice = _parse_notice(holder, self.driver.get(paths.gc_sweep(holder)))
            except PathNotFound:
                ended[holder] = math.inf  # listed, gone when read: it ended just now
                continue
            if notice is None:
                continue  # debris: no collection speaks through it
            if notice.expired(now):
                ended[holder] = notice.expires
            else:
                notices.append(notice)
        return notices, ended

    def _doomed_among(self, holder: str, wanted: frozenset[Digest]) -> frozenset[Digest]:
        """Which of `wanted` a deleting collection may delete. Its doomed list is written once,
        before it says it is deleting, so it is cached; when it is gone the collection finished
        since, and may have deleted any of them."""
        cached = self._doomed.get(holder)
        if cached is not None:
            return wanted & cached
        try:
            listed = json.loads(self.driver.get(paths.gc_doomed(holder)))
            doomed = frozenset(Digest.parse(str(d)) for d in listed)
        except PathNotFound:
            return wanted
        except (ValueError, TypeError, OCIValidationError):
            return wanted  # unreadable: assume the worst, the caller checks what is still there
        if len(self._doomed) >= 16:
            self._doomed.clear()
        self._doomed[holder] = doomed
        return wanted & doomed

    def _wait_out(self, holder: str) -> None:
        pause = 0.1
        while True:
            notice = read_notice(self.driver, holder)
            if notice is None or notice.expired(self.clock()):
                return
            self.sleep(pause)
            pause = min(pause * 2, _POLL_MAX)


@dataclass(frozen=True, slots=True)
class _Listing:
    """One listing of GC_SWEEPS: the collectors with a notice, and the finished marks (key: (holder, ended))."""

    holders: list[str]
    finished: dict[str, tuple[str, float]]


def _listed(driver: StorageDriver) -> _Listing:
    keys = _keys(driver, paths.GC_SWEEPS)
    finished = {k: mark for k in keys if (mark := paths.gc_sweep_finished_of(k)) is not None}
    return _Listing(_holders(keys), finished)


def _listed_holders(driver: StorageDriver, prefix: str) -> list[str]:
    return _holders(_keys(driver, prefix))


def _keys(driver: StorageDriver, prefix: str) -> list[str]:
    try:
        return driver.list(prefix)
    except PathNotFound:
        return []


def _holders(keys: list[str]) -> list[str]:
    """The collectors `keys` (a listing of GC_SWEEPS, GC_DOOMED or GC_KEPT) belong to."""
    return [h for h in (paths.gc_sweep_holder(k) for k in keys) if h is not None]
