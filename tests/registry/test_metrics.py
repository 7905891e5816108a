"""`/metrics` as a registry with the defaults serves it: metrics on, auth off, anonymous off, so
nobody can read them, and the refusal says how to open them. (Access with auth on, several workers
and the listener of its own: tests/e2e/test_metrics.py.)"""

from __future__ import annotations

import httpx

from .helpers import assert_error


def test_closed_by_default_with_a_way_to_open_it(client: httpx.Client) -> None:
    for auth in (None, ("someone", "secret")):
        r = client.get("/metrics", auth=auth)
        assert_error(r, 403, "DENIED")
        assert "metrics.anonymous" in r.json()["errors"][0]["message"]
        assert "metrics: true" in r.json()["errors"][0]["message"]
    assert client.head("/metrics").status_code == 403


def test_tallied_observations_reach_the_histogram_as_if_observed_one_by_one() -> None:
    """The hot paths count into a Tally (registry.metrics.tally) that adds its sums to the metrics
    at each flush; what a scrape then shows is what observing each value directly shows."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from registry.metrics.tally import Tally

    def exposed(registry: CollectorRegistry) -> list[str]:  # the series, not when each was created
        return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]

    buckets = (0.001, 0.01, 0.1, 1.0)
    values = [0.0005, 0.001, 0.002, 0.05, 0.1, 0.5, 3.0, 0.0001, 0.01, 7.5]
    tallied_registry, direct_registry = CollectorRegistry(), CollectorRegistry()
    tallied = Histogram("h", "h", ("key",), buckets=buckets, registry=tallied_registry)
    direct = Histogram("h", "h", ("key",), buckets=buckets, registry=direct_registry)
    totals: dict[str, tuple[float, float]] = {}

    def apply(key: str, seconds: float, first: float, second: float, counts: list[int]) -> None:
        from registry.metrics.tally import observe_many

        observe_many(tallied.labels(key), seconds, counts)
        totals[key] = (first, second)

    tally: Tally[str] = Tally(buckets, apply)
    for i, value in enumerate(values):
        tally.observe("a" if i % 3 else "b", value, first=i, second=1)
        direct.labels("a" if i % 3 else "b").observe(value)
    tally.flush()
    assert exposed(tallied_registry) == exposed(direct_registry)
    assert totals == {"a": (sum(i for i in range(10) if i % 3), 6), "b": (0 + 3 + 6 + 9, 4)}
    tally.flush()  # nothing pending: nothing changes
    assert exposed(tallied_registry) == exposed(direct_registry)
