"""The request metrics: a RequestObserver (registry.requestinfo) that counts every finished request
by route template, method and status, its duration and its body bytes, and the uploads in progress.

It runs on the event loop for every request, so it does as little as it can: a request adds to a
`Tally` (registry.metrics.tally: one lock, a few additions), and the sums reach the labelled
children, looked up once per (route, method, status) and kept, at the next flush.
Labels come only from bounded sets: the route template (never the raw path; requests no route
matched share the label `unmatched`), a known method or `other`, the status; the repository only
with `metrics.repository_labels`.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from ..requestinfo import RequestInfo
from .families import REQUEST_BUCKETS, UPLOADS_IN_PROGRESS, request_families
from .tally import Tally, observe_many

UNMATCHED = "unmatched"
OTHER_METHOD = "other"
_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"})
_UPLOAD_METHODS = frozenset({"POST", "PATCH", "PUT"})
_UPLOAD_PATH = "/blobs/uploads/"
#: With repository labels the children are as many as the names clients send: keep at most this
#: many at hand (the metric itself keeps them all, as the operator asked).
_MAX_CACHED = 10_000
_Children = tuple[Counter, Histogram, Counter, Counter]


def is_upload(info: RequestInfo) -> bool:
    """Whether the request sends an upload's bytes (known before routing: the path and method)."""
    return info.method in _UPLOAD_METHODS and _UPLOAD_PATH in info.path


class RequestMetrics:
    """A RequestObserver with the `request_started` hook (registry.requestinfo.RequestStarts)."""

    def __init__(self, repository_labels: bool = False) -> None:
        self.families = request_families(repository_labels)
        self.repository_labels = repository_labels
        #: (route, method, status[, repository]) as the request has them → its labelled children.
        self._children: dict[tuple[str | int, ...], _Children] = {}
        self._uploads = UPLOADS_IN_PROGRESS
        #: Per key: the durations (their count is the requests'), bytes in and bytes out.
        #: Only the event loop observes requests: no lock (registry.metrics.tally).
        self._tally: Tally[tuple[str | int, ...]] = Tally(REQUEST_BUCKETS, self._apply, shared=False)

    def request_started(self, info: RequestInfo) -> None:
        if is_upload(info):
            self._uploads.inc()

    def request_done(self, info: RequestInfo) -> None:
        if is_upload(info):
            self._uploads.dec()
        method = info.method if info.method in _METHODS else OTHER_METHOD
        key = ((info.route, method, info.status, info.repository) if self.repository_labels
               else (info.route, method, info.status))
        self._tally.observe(key, info.seconds, info.bytes_in, info.bytes_out)

    def _apply(self, key: tuple[str | int, ...], seconds: float, bytes_in: float, bytes_out: float,
               buckets: list[int]) -> None:
        children = self._children.get(key)
        if children is None:
            children = self._make(key)
        requests, duration, received, sent = children
        requests.inc(sum(buckets))
        observe_many(duration, seconds, buckets)
        if bytes_in:
            received.inc(bytes_in)
        if bytes_out:
            sent.inc(bytes_out)

    def _make(self, key: tuple[str | int, ...]) -> _Children:
        route, method, status, *repository = (str(part) for part in key)
        labels = (route or UNMATCHED, method, *repository)
        families = self.families
        children = (families.requests.labels(route or UNMATCHED, method, status, *repository),
                    families.duration.labels(*labels), families.received.labels(*labels),
                    families.sent.labels(*labels))
        if len(self._children) >= _MAX_CACHED:
            self._children.clear()
        self._children[key] = children
        return children
