"""A durable queue in storage, on nothing but the driver protocol (put, get, list, delete_many), so
it is the same on disk and on S3 and every replica over the bucket sees the same queue:

    v1/queues/<name>/items/<queued time, µs, 17 digits>-<item id>   one small object per item
    v1/queues/<name>/lease                                          who works through it now

Items are listed in the order they were queued (the key starts with the time; ties go by id). A
put of the same id at the same time writes the same key, so putting an item again is harmless.
An item stays until it is removed: whoever works through the queue removes it only once it is
handled, so a process that dies with items in hand leaves them to the next holder of the lease.
The lease (storage.lease) is what lets one process of many work through the queue at a time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import paths
from .driver.base import StorageDriver
from .errors import PathNotFound
from .lease import Lease

if TYPE_CHECKING:
    from .repository import Storage

_STAMP_DIGITS = 17
#: What an item's key ends in; anything else below `items/` is not ours (debris) and is skipped.
_ITEM = re.compile(rf"^(\d{{{_STAMP_DIGITS}}})-([a-z0-9][a-z0-9._-]*)$")


@dataclass(frozen=True, slots=True)
class QueueItem:
    key: str
    id: str
    #: When it was queued (seconds since the epoch).
    queued: float


class Queue:
    def __init__(self, driver: StorageDriver, name: str) -> None:
        self.driver = driver
        self.name = name
        self._items = paths.queue_items(name)  # validates the name

    def put(self, item_id: str, body: bytes, queued: float | None = None) -> QueueItem:
        """Store an item (`item_id`: a-z 0-9 . _ -, stable for the item) queued at `queued` (now
        by default); when this returns, the item is in storage."""
        when = time.time() if queued is None else queued
        stamp = f"{round(when * 1_000_000):0{_STAMP_DIGITS}d}"
        key = paths.queue_item(self.name, f"{stamp}-{item_id}")
        self.driver.put(key, body)
        return QueueItem(key, item_id, int(stamp) / 1_000_000)

    def pending(self) -> list[QueueItem]:
        """Every item waiting, in the order they were queued (one listing)."""
        try:
            keys = self.driver.list(self._items)
        except PathNotFound:
            return []
        items = []
        prefix = self._items + "/"
        for key in keys:
            match = _ITEM.fullmatch(key.removeprefix(prefix))
            if match is not None:
                items.append(QueueItem(key, match.group(2), int(match.group(1)) / 1_000_000))
        return items

    def read(self, item: QueueItem) -> bytes | None:
        """The item's body; None when it is gone (another process handled it)."""
        try:
            return self.driver.get(item.key)
        except PathNotFound:
            return None

    def remove(self, items: Sequence[QueueItem]) -> None:
        """Remove handled items (those already gone are no error)."""
        if items:
            self.driver.delete_many([item.key for item in items])

    def depth(self) -> int:
        """How many items wait."""
        return len(self.pending())

    def lease(self, holder: str, ttl: float) -> Lease:
        """The lease of working through this queue, as `holder` would take it."""
        return Lease(self.driver, holder, ttl, key=paths.queue_lease(self.name))


def open_queue(storage: Storage, name: str) -> Queue:
    """The queue `name` of a store (the registry reaches its storage through `Storage` only)."""
    return Queue(storage.driver, name)
