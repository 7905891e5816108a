"""Journals: append-only records that every replica writes to and any reader finds in one place
(the audit trail is one, `v1/journals/audit/`).

A journal is written in batches: each `append` puts one new object holding its records as lines
(`v1/journals/<name>/<YYYY-MM-DD>/<HHMMSS.ffffff>-<writer>-<seq>`), so writers never touch each
other's objects and every driver's atomic `put` is all the concurrency control needed. The key
holds the time the batch was written (UTC): listing a day gives its batches in the order they were
written, and a reader of a time range skips the days and batches outside it without reading them.

Records are opaque lines of text here (the audit trail's are JSON); a record made before its batch
was written is in a batch stamped at or after its own time, which is how `batches(since=...)` may
skip every batch written before `since`.
"""

from __future__ import annotations

import calendar
import itertools
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import paths
from .driver.base import StorageDriver
from .errors import PathNotFound

if TYPE_CHECKING:
    from .repository import Storage

#: Batches fetched at once while reading (a day of an S3 journal is many small objects).
_READ_AHEAD = 8


@dataclass(frozen=True, slots=True)
class JournalBatch:
    key: str
    #: When it was written (seconds since the epoch, from its key).
    written: float
    lines: list[str]


class Journal:
    """One journal of one store. `append` is safe from many threads, processes and replicas at once."""

    def __init__(self, driver: StorageDriver, name: str) -> None:
        paths.journal(name)  # a bad name fails here, not at the first append
        self.driver = driver
        self.name = name
        #: This writer's part of every batch key: no two writers (processes, replicas) share one.
        self.writer = uuid.uuid4().hex[:12]
        self._seq = itertools.count()

    def append(self, lines: Sequence[str], now: float | None = None) -> str:
        """Write `lines` (records without newlines) as one new batch, durably; returns its key."""
        if any("\n" in line or "\r" in line for line in lines):
            raise ValueError("a journal record is one line")
        when = time.time() if now is None else now
        day, stamp = _stamp(when)
        key = paths.journal_batch(self.name, day, f"{stamp}-{self.writer}-{next(self._seq):08d}")
        self.driver.put(key, "".join(f"{line}\n" for line in lines).encode())
        return key

    def days(self, since: float | None = None, until: float | None = None) -> list[str]:
        """The days (`YYYY-MM-DD`, UTC) that have batches, oldest first, within `since`..`until`."""
        first = _day(since) if since is not None else ""
        last = _day(until) if until is not None else "9999-12-31"
        try:
            keys = self.driver.list(paths.journal(self.name))
        except PathNotFound:
            return []
        days = (key.rsplit("/", 1)[1] for key in keys)
        return sorted(day for day in days if _is_day(day) and first <= day <= last)

    def batches(self, since: float | None = None, until: float | None = None) -> Iterator[JournalBatch]:
        """Every batch written within `since`..`until` (inclusive, either open), in the order they
        were written. A batch removed while reading is skipped; a key that is no batch is ignored."""
        for day in self.days(since, until):
            try:
                keys = self.driver.list(paths.journal_day(self.name, day))
            except PathNotFound:
                continue
            chosen: list[tuple[str, float]] = []
            for key in keys:
                written = _written(day, key.rsplit("/", 1)[1])
                if written is None or (since is not None and written < since):
                    continue
                if until is not None and written > until:
                    break  # keys sort by time within a day
                chosen.append((key, written))
            yield from self._read(chosen)

    def _read(self, chosen: list[tuple[str, float]]) -> Iterator[JournalBatch]:
        if not chosen:
            return
        with ThreadPoolExecutor(max_workers=min(_READ_AHEAD, len(chosen))) as pool:
            for start in range(0, len(chosen), _READ_AHEAD):
                window = chosen[start:start + _READ_AHEAD]
                for (key, written), data in zip(window, pool.map(self._get, [k for k, _ in window]), strict=True):
                    if data is not None:
                        yield JournalBatch(key, written, data.decode("utf-8", errors="replace").splitlines())

    def _get(self, key: str) -> bytes | None:
        try:
            return self.driver.get(key)
        except PathNotFound:
            return None


def open_journal(storage: Storage, name: str) -> Journal:
    """The journal `name` of a store (the registry's way in: it never handles the driver)."""
    return Journal(storage.driver, name)


def _stamp(when: float) -> tuple[str, str]:
    micros = round(when * 1_000_000)
    seconds, fraction = divmod(micros, 1_000_000)
    moment = time.gmtime(seconds)
    return time.strftime("%Y-%m-%d", moment), time.strftime("%H%M%S", moment) + f".{fraction:06d}"


def _day(when: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(when))


def _is_day(text: str) -> bool:
    try:
        time.strptime(text, "%Y-%m-%d")
    except ValueError:
        return False
    return True


def _written(day: str, stamp: str) -> float | None:
    """When the batch `stamp` of `day` was written, or None for a key that is no batch's."""
    clock = stamp.split("-", 1)[0]
    if len(clock) != 13 or clock[6] != "." or not (clock[:6] + clock[7:]).isdigit():
        return None
    try:
        start = calendar.timegm(time.strptime(day, "%Y-%m-%d"))
    except ValueError:
        return None
    return start + int(clock[0:2]) * 3600 + int(clock[2:4]) * 60 + float(clock[4:])
