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
