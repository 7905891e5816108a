"""A lease: one object saying which replica does a job now and until when, so that several
replicas scheduling it take turns. The collection lease (`v1/gc/lease`, the default key) lets
one collector sweep at a time; a queue's lease (`paths.queue_lease`) one replica deliver. A holder
that dies loses it when it expires.

It is an economy, not the safety: two collections racing for it (both read it free, both write)
may both proceed, and that is harmless, because what keeps a collection from deleting what a push
needs is the sweep protocol (storage.sweeping), which holds for any number of collectors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import paths
from .driver.base import StorageDriver
from .errors import PathNotFound
from .links import delete_quietly


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    holder: str
    expires: float


class Lease:
    def __init__(self, driver: StorageDriver, holder: str, ttl: float,
                 clock: Callable[[], float] = time.time, key: str = paths.GC_LEASE) -> None:
        self.driver = driver
        self.holder = holder
        self.ttl = ttl
        self.clock = clock
        self.key = key

    def current(self) -> LeaseHolder | None:
        """Who holds the lease, if anyone does and it has not expired."""
        try:
            raw = json.loads(self.driver.get(self.key))
            held = LeaseHolder(str(raw["holder"]), float(raw["expires"]))
        except PathNotFound:
            return None
        except (ValueError, KeyError, TypeError):
            return None  # debris: nobody holds a lease through it
        return held if held.expires > self.clock() else None

    def acquire(self) -> LeaseHolder | None:
        """Take the lease. None when taken (it is ours); otherwise who holds it."""
        held = self.current()
        if held is not None and held.holder != self.holder:
            return held
        self.renew()
        held = self.current()  # a racer that wrote after us holds it: let it sweep
        if held is not None and held.holder != self.holder:
            return held
        return None

    def renew(self) -> None:
        body = {"holder": self.holder, "expires": self.clock() + self.ttl}
        self.driver.put(self.key, json.dumps(body).encode())

    def release(self) -> None:
        held = self.current()
        if held is not None and held.holder == self.holder:
            delete_quietly(self.driver, self.key)
