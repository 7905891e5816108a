"""Journals on every driver: batches two replicas append are read back in the order they were
written, across days, a time range skipping what is outside it, debris ignored."""

from __future__ import annotations

import calendar

import pytest

from storage import Journal, paths
from storage.driver.base import StorageDriver

DAY = 86400
MIDNIGHT = calendar.timegm((2026, 12, 6, 0, 0, 0))


def test_two_writers_batches_come_back_in_time_order_and_by_range(driver: StorageDriver,
                                                                  driver_replica: StorageDriver) -> None:
    one, other = Journal(driver, "audit"), Journal(driver_replica, "audit")
    assert one.writer != other.writer and list(one.batches()) == [] and one.days() == []
    other.append(['{"n": 3}'], now=MIDNIGHT + 20)
    one.append(['{"n": 1}', '{"n": 2}'], now=MIDNIGHT + 10.25)
    one.append(['{"n": 4}'], now=MIDNIGHT + DAY + 5)
    key = other.append(['{"n": 5}'], now=MIDNIGHT + DAY + 5.000001)
    assert key.startswith("v1/journals/audit/2026-12-07/000005.000001-")
    driver.put(paths.journal_day("audit", "2026-12-07") + "/not-a-batch", b"debris\n")
    driver.put(paths.journal("audit") + "/notes", b"debris\n")

    batches = list(Journal(driver_replica, "audit").batches())
    assert [line for batch in batches for line in batch.lines] == [f'{{"n": {n}}}' for n in range(1, 6)]
    assert [batch.written for batch in batches] == [MIDNIGHT + 10.25, MIDNIGHT + 20, MIDNIGHT + DAY + 5,
                                                   pytest.approx(MIDNIGHT + DAY + 5.000001)]
    assert one.days() == ["2026-12-06", "2026-12-07"] and one.days(since=MIDNIGHT + DAY) == ["2026-12-07"]
    ranged = one.batches(since=MIDNIGHT + 15, until=MIDNIGHT + DAY + 5)
    assert [batch.lines for batch in ranged] == [['{"n": 3}'], ['{"n": 4}']]
    assert list(one.batches(until=MIDNIGHT + 10)) == []

    with pytest.raises(ValueError):
        one.append(['{"n": 6}\n{"forged": true}'])
    with pytest.raises(ValueError):
        Journal(driver, "Not A Name")
