"""Every metric the registry itself updates, defined once, the usual prometheus_client way (on its
default registry, so `/metrics` serves them with anyone else's, e.g. the notifications').

Names follow Prometheus' conventions: the `cargobay_` prefix, base units (seconds, bytes) in the
name, counters ending in `_total`. docs/operations.md lists each one; a metric added here is added
there. Label values are bounded: route templates, methods, statuses, operation names, configured
hosts and patterns; never a repository unless `metrics.repository_labels` asks for one.

Under several workers prometheus_client keeps these values in files that every worker's `/metrics`
sums (registry.metrics.exposition); a gauge says there how to combine the workers' values.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics

# No `_created` series: the summed files of several workers have none, and one worker's exposition
# should read the same as several workers'.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Request durations: a manifest answers in milliseconds, a blob upload may take minutes.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   300.0)
#: Storage calls: a page-cache read takes microseconds, an S3 copy of a large layer a minute.
STORAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 120.0)

# -- HTTP (registry.metrics.requests) ---------------------------------------------------------------
UPLOADS_IN_PROGRESS = Gauge(
    "cargobay_http_uploads_in_progress",
    "Requests sending an upload's bytes right now (POST, PATCH and PUT of /v2/{name}/blobs/uploads/).",
    multiprocess_mode="livesum")


@dataclass(frozen=True)
class RequestFamilies:
    requests: Counter
    duration: Histogram
    received: Counter
    sent: Counter


_REQUEST_FAMILIES: dict[bool, RequestFamilies] = {}


def request_families(repository_labels: bool) -> RequestFamilies:
    """The request metrics, labelled by route, method (and status), plus `repository` when asked.
    A process has one kind: asking for the other replaces the first (tests build apps of both)."""
    made = _REQUEST_FAMILIES.get(repository_labels)
    if made is not None:
        return made
    for other in _REQUEST_FAMILIES.values():
        for family in (other.requests, other.duration, other.received, other.sent):
            REGISTRY.unregister(family)
    _REQUEST_FAMILIES.clear()
    extra = ("repository",) if repository_labels else ()
    made = RequestFamilies(
        Counter("cargobay_http_requests_total", "HTTP requests answered, by route template, method and status.",
                ("route", "method", "status", *extra)),
        Histogram("cargobay_http_request_duration_seconds",
                  "Time from a request's arrival to the end of its answer, by route template and method.",
                  ("route", "method", *extra), buckets=REQUEST_BUCKETS),
        Counter("cargobay_http_received_bytes_total", "Request body bytes received, by route template and method.",
                ("route", "method", *extra)),
        Counter("cargobay_http_sent_bytes_total", "Response body bytes sent, by route template and method.",
                ("route", "method", *extra)),
    )
    _REQUEST_FAMILIES[repository_labels] = made
    return made


# -- storage (registry.metrics.storagecalls) --------------------------------------------------------
STORAGE_DURATION = Histogram(
    "cargobay_storage_operation_duration_seconds",
    "Storage driver calls by driver and operation, and how long each took (its _count is the number of calls).",
    ("driver", "operation"), buckets=STORAGE_BUCKETS)
STORAGE_ERRORS = Counter(
    "cargobay_storage_errors_total",
    "Storage driver calls that failed (a key that is not there is an answer, not counted), by error class.",
    ("driver", "operation", "error"))
STORAGE_RETRIES = Counter(
    "cargobay_storage_retries_total",
    "Calls to the storage backend retried by the driver (S3: botocore's retries), by the backend's operation.",
    ("driver", "operation"))

# -- auth, lifecycle jobs (registry.metrics.listener) -----------------------------------------------
FAILED_LOGINS = Counter(
    "cargobay_auth_failed_logins_total",
    "Logins refused for wrong credentials (Basic, the token endpoint, refresh tokens).")
RATE_LIMITED = Counter(
    "cargobay_auth_rate_limited_total",
    "Logins refused without checking, after too many failures from the address or for the user.")
GC_RUNS = Counter("cargobay_gc_runs_total", "Garbage collections this registry ran to the end.")
GC_BLOBS = Counter("cargobay_gc_removed_blobs_total", "Blobs garbage collection removed.")
GC_BYTES = Counter("cargobay_gc_freed_bytes_total", "Bytes garbage collection freed.")
GC_LINKS = Counter("cargobay_gc_removed_links_total", "Repository links to blobs garbage collection removed.")
GC_EXPIRED = Counter("cargobay_gc_expired_manifests_total",
                     "Cached manifests garbage collection dropped, not pulled within proxy.keep_for.")
RETENTION_REMOVED = Counter(
    "cargobay_retention_removed_total", "Tags and untagged manifests retention removed, by kind (tag, manifest).",
    ("kind",))

# -- the pull-through cache (registry.metrics.listener) ---------------------------------------------
PROXY_LOOKUPS = Counter(
    "cargobay_proxy_lookups_total",
    "Pull-through cache look-ups by upstream host, kind (manifest, blob, tags) and result: hit (answered from "
    "the store), miss (fetched from the upstream), stale (the upstream failed; answered from the store).",
    ("upstream", "kind", "result"))
PROXY_ERRORS = Counter(
    "cargobay_proxy_upstream_errors_total",
    "Requests to an upstream that failed (unreachable, 5xx, refused, unverifiable; not a 404), by host and kind.",
    ("upstream", "kind"))
