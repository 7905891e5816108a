"""Prometheus metrics (docs/operations.md, "Metrics"): `GET /metrics` in the Prometheus text format,
summed over every uvicorn worker.

- `families`: every metric the registry updates, defined once (names, help, labels, buckets).
- `requests`: `RequestMetrics`, the request observer (route template, method, status, duration,
  bytes, uploads in progress).
- `storagecalls`: `instrument(driver)`, storage calls timed and counted through storage's
  `ObservedDriver`, S3 retries included.
- `eventcounts`: `EventMetrics`, the event listener (failed logins, rate limiting, gc, retention),
  and `ProxyMetrics`, the pull-through cache's observer.
- `collectors`: `StoredFigures`, what is read from storage at scrape time (jobs' last runs, quotas).
- `multiprocess`: the directory several workers keep their values in (`multiprocess_dir`).
- `exposition`: all of it rendered, from this process or from every worker's files.
- `access`: who may read it; `endpoint`: the route and the listener of its own.

prometheus_client chooses between in-process values and shared files when it is first imported,
so this front door loads everything but `multiprocess` on first use: `registry serve` prepares the
directory before anything imports prometheus_client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .multiprocess import multiprocess_dir

if TYPE_CHECKING:
    from .access import MetricsAccess
    from .collectors import StoredFigures
    from .endpoint import OwnListener, metrics_route
    from .eventcounts import EventMetrics, ProxyMetrics
    from .requests import RequestMetrics
    from .storagecalls import instrument

__all__ = ["EventMetrics", "MetricsAccess", "OwnListener", "ProxyMetrics", "RequestMetrics", "StoredFigures",
           "instrument", "metrics_route", "multiprocess_dir"]

_LAZY = {"MetricsAccess": "access", "StoredFigures": "collectors", "OwnListener": "endpoint",
         "metrics_route": "endpoint", "EventMetrics": "eventcounts", "ProxyMetrics": "eventcounts",
         "RequestMetrics": "requests", "instrument": "storagecalls"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
