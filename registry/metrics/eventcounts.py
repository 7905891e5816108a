"""Metrics counted from what happened, rather than from requests:

- `EventMetrics`, a Listener (registry.events): failed logins and rate-limit refusals
  (`login.failed`), garbage collections and what they removed (`gc.run`'s figures), what retention
  removed (`retention.remove`). It wants nothing else, so pulls and pushes cost it nothing.
- `ProxyMetrics`, the pull-through cache's observer (registry.proxy's `CacheObserver`): hits,
  misses, stale answers and upstream errors per upstream host.

A job run by a command (`registry gc` from cron) counts in that command's process, which nobody
scrapes: registry.metrics.collectors shows each job's last run from storage for that.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter

from ..events import Event
from .families import (
    FAILED_LOGINS,
    GC_BLOBS,
    GC_BYTES,
    GC_EXPIRED,
    GC_LINKS,
    GC_RUNS,
    PROXY_ERRORS,
    PROXY_LOOKUPS,
    RATE_LIMITED,
    RETENTION_REMOVED,
)

_WANTED = frozenset({"login.failed", "gc.run", "retention.remove"})
#: What AuthService.login says of a login refused before its password was looked at.
RATE_LIMITED_DETAIL = "too many failed logins"
#: `gc.run` figure → the counter it adds to.
_GC_FIGURES = {"blobs_removed": GC_BLOBS, "bytes_freed": GC_BYTES, "links_removed": GC_LINKS,
               "manifests_expired": GC_EXPIRED}


class EventMetrics:
    def wants(self, action: str) -> bool:
        return action in _WANTED

    def record(self, events: Sequence[Event]) -> None:
        for event in events:
            if event.action == "login.failed":
                (RATE_LIMITED if event.detail.startswith(RATE_LIMITED_DETAIL) else FAILED_LOGINS).inc()
            elif event.action == "gc.run":
                GC_RUNS.inc()
                for figure, counter in _GC_FIGURES.items():
                    value = event.figures.get(figure, 0)
                    if isinstance(value, int) and value > 0:
                        counter.inc(value)
            elif event.action == "retention.remove":
                RETENTION_REMOVED.labels("tag" if event.tag else "manifest").inc()


class ProxyMetrics:
    """`observe(host, kind, outcome)`: outcome `hit`, `miss`, `stale` (cargobay_proxy_lookups_total)
    or `error` (cargobay_proxy_upstream_errors_total). Called on the event loop and in threads."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, str], Counter] = {}

    def __call__(self, host: str, kind: str, outcome: str) -> None:
        key = (host, kind, outcome)
        counter = self._children.get(key)
        if counter is None:
            counter = self._children[key] = (PROXY_ERRORS.labels(host, kind) if outcome == "error"
                                             else PROXY_LOOKUPS.labels(host, kind, outcome))
        counter.inc()
