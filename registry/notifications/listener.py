"""The events' way into the endpoints' queues: a `Listener` (registry.events) that writes every
event an endpoint wants into that endpoint's queue in storage, as the Distribution event it will
be sent as, before the request that caused it answers. Nothing waits in memory only: what is
queued survives a restart and is delivered by whichever replica holds the queue's lease
(registry.notifications.dispatch). A doorbell tells this process's dispatcher at once; those of
other replicas find the items when they next look.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

from storage import Queue, Storage, open_queue

from ..events import Event
from ..settings import Settings
from .endpoints import Endpoint
from .envelope import Source, distribution_event, encode

log = logging.getLogger("cargobay.notifications")


class Doorbell:
    """Rung from a worker thread when an item was queued; wakes the dispatchers that listen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def attach(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        with self._lock:
            self._listeners.append((loop, wake))

    def detach(self, wake: asyncio.Event) -> None:
        with self._lock:
            self._listeners = [(lp, w) for lp, w in self._listeners if w is not wake]

    def ring(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for loop, wake in listeners:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # that loop has closed: nobody to wake there
                continue


_DOORBELLS: dict[str, Doorbell] = {}
_DOORBELLS_LOCK = threading.Lock()


def doorbell(queue_name: str) -> Doorbell:
    """This process's doorbell of a queue."""
    with _DOORBELLS_LOCK:
        return _DOORBELLS.setdefault(queue_name, Doorbell())


def base_url(settings: Settings, host: str) -> str:
    """Where the target's `url` points: `http.public_url`, else the request's Host with our scheme."""
    if settings.http.public_url:
        return settings.http.public_url.rstrip("/")
    if not host:
        return ""
    return f"{'https' if settings.http.tls.certificate else 'http'}://{host}"


class NotificationListener:
    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.endpoints = [Endpoint(e) for e in settings.notifications.endpoints]
        self.queues: dict[str, Queue] = {e.name: open_queue(storage, e.queue_name) for e in self.endpoints}
        self.source = Source.here(settings.http.port)

    def wants(self, action: str) -> bool:
        return any(endpoint.wants_action(action) for endpoint in self.endpoints)

    def record(self, events: Sequence[Event]) -> None:
        for event in events:
            body: bytes | None = None
            for endpoint in self.endpoints:
                if not endpoint.wants(event.action, event.repository):
                    continue
                if body is None:
                    record = distribution_event(event, self.source, base_url(self.settings, event.host))
                    if record is None:
                        break
                    body = encode(record)
                try:
                    self.queues[endpoint.name].put(event.id, body, queued=event.time)
                except Exception:  # the others still get theirs; the change has happened either way
                    log.exception("could not queue event %s (%s of %s) for endpoint %s", event.id, event.action,
                                  event.repository, endpoint.name)
                    continue
                doorbell(endpoint.queue_name).ring()
