"""The durable queue (storage.queue) on every driver: items come back in the order they were
queued whoever queued them (another replica included, and over paginated listings), byte for byte;
putting one again does not double it; removed ones are gone; debris below the items is skipped;
the lease lets one holder through at a time."""

from __future__ import annotations

from storage import paths
from storage.driver.base import StorageDriver
from storage.queue import Queue


def test_items_in_queued_order_across_replicas_until_removed(driver: StorageDriver,
                                                             driver_replica: StorageDriver) -> None:
    mine, theirs = Queue(driver, "notifications-ci"), Queue(driver_replica, "notifications-ci")
    assert mine.pending() == [] and mine.depth() == 0
    base = 1_765_000_000.0
    # Queued out of order, by two replicas; one at the same microsecond as another (the id decides).
    mine.put("e3", b'{"n":3}', queued=base + 3)
    theirs.put("e1", b'{"n":1}', queued=base + 1)
    mine.put("e2b", b'{"n":22}', queued=base + 2)
    theirs.put("e2a", b'{"n":2}', queued=base + 2)
    mine.put("e4", b'{"n":4}', queued=base + 4.000001)
    mine.put("e1", b'{"n":1}', queued=base + 1)  # again: same key, still one item
    driver.put(f"{paths.queue_items('notifications-ci')}/not-an-item", b"debris")

    items = theirs.pending()
    assert [item.id for item in items] == ["e1", "e2a", "e2b", "e3", "e4"]
    assert items[4].queued == base + 4.000001
    assert [theirs.read(item) for item in items[:2]] == [b'{"n":1}', b'{"n":2}']
    assert mine.depth() == 5

    mine.remove(items[:3])
    mine.remove(items[:1])  # already gone: no error
    assert [item.id for item in theirs.pending()] == ["e3", "e4"]
    assert theirs.read(items[0]) is None
    assert Queue(driver, "notifications-other").pending() == []  # queues are apart


def test_one_holder_of_the_lease_at_a_time(driver: StorageDriver, driver_replica: StorageDriver) -> None:
    clock = [1000.0]
    a = Queue(driver, "notifications-ci").lease("replica-a", ttl=30)
    b = Queue(driver_replica, "notifications-ci").lease("replica-b", ttl=30)
    a.clock = b.clock = lambda: clock[0]
    assert a.acquire() is None
    held = b.acquire()
    assert held is not None and held.holder == "replica-a"
    clock[0] += 31  # a died: its lease expired
    assert b.acquire() is None and a.acquire() is not None
    b.release()
    assert a.acquire() is None
    assert driver.get(paths.queue_lease("notifications-ci"))  # where every replica looks
