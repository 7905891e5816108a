"""The notification metrics, registered the usual prometheus_client way (whatever serves
`/metrics` serves them). Every endpoint's series exist from the start, at 0."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

QUEUE_DEPTH = Gauge(
    "cargobay_notifications_queue_depth",
    "Events waiting for the endpoint, as the replica delivering to it last saw; the others say 0, so the "
    "max over replicas is the queue's depth.",
    ["endpoint"], multiprocess_mode="livemax")
DELIVERED = Counter(
    "cargobay_notifications_delivered", "Events the endpoint took (answered 2xx).", ["endpoint"])
FAILURES = Counter(
    "cargobay_notifications_failures",
    "Deliveries that failed (no answer in time, or not 2xx); their events are sent again.", ["endpoint"])


def declare(endpoint: str) -> None:
    QUEUE_DEPTH.labels(endpoint).set(0)
    DELIVERED.labels(endpoint)
    FAILURES.labels(endpoint)
