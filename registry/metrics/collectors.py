"""Metrics read from storage when Prometheus scrapes, not counted by this process: each lifecycle
job's last run (storage.runs: whichever replica or `registry gc` from cron ran it) and the usage of
each quota (`policy.quotas`, storage.usage). Every replica reads the same figures.

A scrape must stay cheap however often it comes: the last runs are two small reads, the quotas one
listing each, kept for `ttl` seconds (one scrape at a time refreshes them). Storage failing leaves
those metrics out (one warning) instead of failing the scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client.core import GaugeMetricFamily, Metric

from storage import Storage, StorageError

if TYPE_CHECKING:  # the quotas are made by create_app; only their type is needed here
    from ..lifecycle.quota import Quotas

log = logging.getLogger("cargobay.registry")
T = TypeVar("T")
QUOTA_CACHE_SECONDS = 15.0
JOBS = ("gc", "retention")


class StoredFigures:
    """A prometheus_client Collector of the figures storage keeps."""

    def __init__(self, storage: Storage, quotas: Quotas | None, ttl: float = QUOTA_CACHE_SECONDS) -> None:
        self.storage = storage
        self.quotas = quotas
        self.ttl = ttl
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._quota_cache: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if time.monotonic() - self._read_at >= self.ttl:
                self._quota_cache = self._quota_families()
                self._read_at = time.monotonic()
            quotas = self._quota_cache
        return iter(self._job_families() + quotas)

    def _job_families(self) -> list[Metric]:
        finished = GaugeMetricFamily("cargobay_job_last_run_timestamp_seconds",
                                     "When the last run of a lifecycle job (gc, retention) finished, Unix time, "
                                     "whichever replica or command ran it.", labels=("task",))
        took = GaugeMetricFamily("cargobay_job_last_run_duration_seconds",
                                 "How long the last run of a lifecycle job took.", labels=("task",))
        blobs = GaugeMetricFamily("cargobay_gc_last_run_removed_blobs",
                                  "Blobs the last garbage collection removed.")
        freed = GaugeMetricFamily("cargobay_gc_last_run_freed_bytes", "Bytes the last garbage collection freed.")
        removed = GaugeMetricFamily("cargobay_retention_last_run_removed",
                                    "Tags and untagged manifests the last retention run removed, by kind.",
                                    labels=("kind",))
        for job in JOBS:
            record = self._read(f"the last {job} run", self.storage.last_run, job)
            if record is None:
                continue
            finished.add_metric([job], float(record["finished"]))
            milliseconds = _number(record.get("milliseconds"))
            if milliseconds is not None:
                took.add_metric([job], milliseconds / 1000)
            if job == "gc":
                _add_if_number(blobs, [], record.get("blobs_removed"))
                _add_if_number(freed, [], record.get("bytes_freed"))
            else:
                _add_if_number(removed, ["tag"], record.get("tags_removed"))
                _add_if_number(removed, ["manifest"], record.get("manifests_removed"))
        return [finished, took, blobs, freed, removed]

    def _quota_families(self) -> list[Metric]:
        if self.quotas is None:
            return []
        used = GaugeMetricFamily("cargobay_quota_used_bytes",
                                 "Bytes of the unique blobs the repositories a quota covers link, by quota "
                                 "(its repositories glob).", labels=("quota",))
        limit = GaugeMetricFamily("cargobay_quota_limit_bytes", "A quota's limit, by quota.", labels=("quota",))
        blobs = GaugeMetricFamily("cargobay_quota_blobs", "Unique blobs counted against a quota, by quota.",
                                  labels=("quota",))
        index = self.quotas.index
        for rule in index.rules:
            limit.add_metric([rule.pattern], float(self.quotas.limits[rule.id]))
            usage = self._read(f"the usage of quota {rule.pattern}", index.usage, rule)
            if usage is not None:
                used.add_metric([rule.pattern], float(usage.bytes))
                blobs.add_metric([rule.pattern], float(usage.blobs))
        return [used, limit, blobs]

    @staticmethod
    def _read(what: str, read: Callable[..., T], *args: Any) -> T | None:
        try:
            return read(*args)
        except StorageError as exc:
            log.warning("metrics: cannot read %s: %s", what, exc)
            return None


def _number(value: object) -> float | None:
    """A figure of a run record as a float; None for anything else (a record is JSON from storage)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _add_if_number(family: GaugeMetricFamily, labels: list[str], value: object) -> None:
    number = _number(value)
    if number is not None:
        family.add_metric(labels, number)
