"""Working through one endpoint's queue: a background task of `registry serve` (one per endpoint
and process) that delivers while its process holds the queue's lease, and otherwise waits to take
it over from a holder that stopped or died.

The holder lists what waits, in the order it was queued, POSTs it in envelopes of up to `BATCH`
events and removes the events only after a 2xx answer; a failure is retried after `backoff`,
doubling up to `max_backoff`, for as long as it takes (the events stay in storage meanwhile, so a
receiver down for an hour, or a restart, loses none). It renews the lease while it works, waits
and retries, and releases it when the server stops, so the next process takes over at once; a
process that dies loses it when it expires. Each event goes out from one process, at least once:
a receiver drops repeats by the event's `id`.

Taking the lease is read, write, read (storage.lease); two processes taking it at the same moment
may both see their own name, so a taker waits `SETTLE` and looks again before it delivers
anything: the later write has landed by then and only its writer goes on. Blocking work (storage,
the POST) runs in the thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time

from storage import Queue, QueueItem

from ..handlers.base import run
from .delivery import Sender
from .endpoints import Endpoint
from .envelope import envelope
from .listener import doorbell
from .metrics import DELIVERED, FAILURES, QUEUE_DEPTH, declare

log = logging.getLogger("cargobay.notifications")

#: Most events in one envelope.
BATCH = 50
#: How often the holder looks for events other replicas queued (its own process rings at once).
POLL = 1.0
#: How long a lease lasts without renewal (at least; three times the endpoint's timeout if longer).
LEASE_TTL = 30.0
#: After taking the lease, this long before looking again whether it is still ours.
SETTLE = 0.5
#: After the queue could not be read or written (storage down), this long before trying again.
STORAGE_RETRY = 5.0


class Dispatcher:
    def __init__(self, endpoint: Endpoint, queue: Queue, sender: Sender, holder: str) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.queue = queue
        self.sender = sender
        self.ttl = max(LEASE_TTL, 3 * endpoint.settings.timeout)
        self.lease = queue.lease(holder, self.ttl)
        self._renewed = 0.0  # time.monotonic() of the last write of the lease
        self._failures = 0  # deliveries failed in a row
        self._wake = asyncio.Event()
        declare(self.name)

    async def run(self) -> None:
        """Until cancelled: deliver while this process holds the lease; otherwise look at the
        lease every third of its life."""
        bell = doorbell(self.queue.name)
        bell.attach(asyncio.get_running_loop(), self._wake)
        try:
            # Processes started together do not all reach for the lease at the same instant.
            await asyncio.sleep(random.uniform(0, SETTLE))  # noqa: S311 - spreading, not secrecy
            while True:
                try:
                    if await self._take():
                        await self._deliver_while_held()
                    delay = self.ttl / 3
                except Exception as exc:  # storage down, mostly: the events wait where they are
                    log.warning("notifications to %s: cannot work through the queue (%s: %s); trying again in %.0fs",
                                self.name, type(exc).__name__, exc, STORAGE_RETRY)
                    delay = STORAGE_RETRY
                QUEUE_DEPTH.labels(self.name).set(0)  # the holder says how deep it is
                await asyncio.sleep(delay)
        finally:
            bell.detach(self._wake)
            with contextlib.suppress(Exception):
                await run(self.lease.release)  # the next process takes over without waiting for it to expire
            self.sender.close()

    # -- the lease -------------------------------------------------------------------------------
    async def _take(self) -> bool:
        started = time.monotonic()
        if await run(self.lease.acquire) is not None:
            return False
        await asyncio.sleep(SETTLE)
        held = await run(self.lease.current)
        if held is None or held.holder != self.lease.holder:
            return False
        self._renewed = started
        log.info("notifications to %s: delivering from this process", self.name)
        return True

    async def _keep(self) -> bool:
        """Renew the lease when a third of its life has passed; False when another holds it now."""
        started = time.monotonic()
        if started - self._renewed < self.ttl / 3:
            return True
        other = await run(self.lease.acquire)
        if other is not None:
            log.info("notifications to %s: %s delivers now", self.name, other.holder)
            return False
        self._renewed = started
        return True

    async def _hold(self, seconds: float) -> bool:
        """Wait `seconds`, keeping the lease; False when it was lost meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, self.ttl / 6))
            if not await self._keep():
                return False
        return True

    # -- delivering ------------------------------------------------------------------------------
    async def _deliver_while_held(self) -> None:
        while True:
            self._wake.clear()  # before listing: what is queued after the listing rings again
            items = await run(self.queue.pending)
            QUEUE_DEPTH.labels(self.name).set(len(items))
            if not items:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL)
                if not await self._keep():
                    return
                continue
            for start in range(0, len(items), BATCH):
                if not await self._keep():
                    return
                batch = items[start:start + BATCH]
                if not await self._send(batch):
                    if not await self._hold(self._delay()):
                        return
                    break  # list again: the same events first, and what came meanwhile
                QUEUE_DEPTH.labels(self.name).set(len(items) - start - len(batch))

    def _delay(self) -> float:
        settings = self.endpoint.settings
        return float(min(settings.max_backoff, settings.backoff * 2 ** min(self._failures - 1, 30)))

    async def _send(self, batch: list[QueueItem]) -> bool:
        """Deliver `batch` and remove it; False when the endpoint did not take it."""
        ready = await run(self._read, batch)
        if not ready:
            return True
        why = await run(self.sender.post, envelope([body for _, body in ready]))
        if why is not None:
            self._failures += 1
            FAILURES.labels(self.name).inc()
            log.warning("notifications to %s: %d events not delivered (%s, attempt %d); retrying in %.1fs",
                        self.name, len(ready), why, self._failures, self._delay())
            return False
        if self._failures:
            log.info("notifications to %s: delivered again after %d failed attempts", self.name, self._failures)
        self._failures = 0
        await run(self.queue.remove, [item for item, _ in ready])
        DELIVERED.labels(self.name).inc(len(ready))
        return True

    def _read(self, batch: list[QueueItem]) -> list[tuple[QueueItem, bytes]]:
        """The events of `batch` still there, byte for byte as queued; an item that is no event
        (debris) would be refused forever and hold up every event after it, so it goes."""
        ready, debris = [], []
        for item in batch:
            body = self.queue.read(item)
            if body is None:
                continue  # handled already (by a holder before us)
            try:
                valid = isinstance(json.loads(body), dict)
            except ValueError:
                valid = False
            if valid:
                ready.append((item, body))
            else:
                log.error("notifications to %s: removing %s, which holds no event", self.name, item.key)
                debris.append(item)
        self.queue.remove(debris)
        return ready
