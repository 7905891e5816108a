"""Counts kept in plain Python while requests run, added to their prometheus_client metrics in one
go: a `Tally` per hot path (the request observer, the storage observer), each flushed at every
scrape this process answers and every second by a thread.

Why: a prometheus_client increment takes its lock, and with several workers writes a memory-mapped
file; a histogram observation does that twice and walks its buckets. A request makes several (its
counter, bytes and duration, each storage call's duration), which cost a manifest HEAD more than a
tenth of its time (bench/bench_observability.py --instructions). Here it costs one lock and a few
additions; the sums go to the metrics together. A scrape answered by another worker sees this
worker's counts at most a second late; a process that dies loses at most a second of them.
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from prometheus_client import Histogram

K = TypeVar("K", bound=Hashable)

#: Seconds between the flusher thread's passes.
FLUSH_INTERVAL = 1.0


class Tally(Generic[K]):
    """Observations by key, for one histogram each, with two running totals besides (a request's
    bytes in and out). `observe` is the hot path; `flush` hands each key's growth since the last
    flush to `apply(key, observed_sum, first_total, second_total, bucket_counts)`.

    The totals only grow, and `flush` never writes them: it reads them and keeps what it applied,
    so it needs no lock against `observe`. A tally that one thread alone observes into (`shared`
    False: the request observer, always on the event loop) needs none at all; one that several
    threads observe into (storage calls) takes a lock so that two additions to one total cannot
    interleave."""

    def __init__(self, buckets: Sequence[float], apply: Callable[[K, float, float, float, list[int]], None],
                 shared: bool = True) -> None:
        self.buckets = tuple(buckets)
        self.apply = apply
        self._width = len(self.buckets) + 4  # the sum, the two totals, the buckets and +Inf
        self._totals: dict[K, list[float]] = {}
        self._applied: dict[K, list[float]] = {}
        self._lock: threading.Lock | None = threading.Lock() if shared else None
        self._flushing = threading.Lock()  # one flush at a time (the thread's and a scrape's)
        _register(self)

    def observe(self, key: K, value: float, first: float = 0.0, second: float = 0.0) -> None:
        # Written out rather than general: it runs for every request and every storage call.
        slot = bisect_left(self.buckets, value) + 3  # past the buckets: +Inf, as prometheus_client counts
        lock = self._lock
        if lock is not None:
            lock.acquire()
        try:
            entry = self._totals.get(key)
            if entry is None:
                entry = self._totals[key] = [0.0] * self._width
            entry[0] += value
            entry[1] += first
            entry[2] += second
            entry[slot] += 1
        finally:
            if lock is not None:
                lock.release()

    def flush(self) -> None:
        with self._flushing:
            for key, entry in list(self._totals.items()):  # a copy: observers may add keys meanwhile
                now = list(entry)  # what it holds at this instant (an addition in flight comes next time)
                before = self._applied.get(key) or [0.0] * self._width
                if now == before:
                    continue
                self._applied[key] = now
                self.apply(key, now[0] - before[0], now[1] - before[1], now[2] - before[2],
                           [int(a - b) for a, b in zip(now[3:], before[3:], strict=True)])


def observe_many(histogram: Histogram, total: float, counts: Sequence[int]) -> None:
    """Add observations to a labelled histogram child: `counts[i]` of them in bucket i (as
    `Tally.add` numbered them), summing to `total`. prometheus_client has no call for many
    observations at once, so this adds to its bucket and sum values directly (tests/registry/
    test_metrics.py checks the exposition against the same observations made one by one)."""
    histogram._sum.inc(total)
    for i, count in enumerate(counts):
        if count:
            histogram._buckets[i].inc(count)


_TALLIES: weakref.WeakSet[Tally[Hashable]] = weakref.WeakSet()
_FLUSHER: threading.Thread | None = None
_FLUSHER_LOCK = threading.Lock()


def _register(tally: Tally[K]) -> None:
    global _FLUSHER
    _TALLIES.add(tally)  # type: ignore[arg-type]
    with _FLUSHER_LOCK:
        if _FLUSHER is None:
            _FLUSHER = threading.Thread(target=_flush_forever, name="metrics-flush", daemon=True)
            _FLUSHER.start()


def flush_all() -> None:
    """Add every tally's pending counts to the metrics (before a scrape renders them)."""
    for tally in list(_TALLIES):
        tally.flush()


def _flush_forever() -> None:
    stop = threading.Event()
    while not stop.wait(FLUSH_INTERVAL):
        flush_all()
