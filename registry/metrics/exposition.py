"""What `/metrics` answers: every metric registered the usual prometheus_client way (ours in
registry.metrics.families, the notifications', anyone's), plus the figures read from storage
(registry.metrics.collectors), in the Prometheus text format.

In one process that is prometheus_client's default registry as it is (with its `process_*` and
`python_*` metrics). With several workers (registry.metrics.multiprocess) the counters, gauges and
histograms come from every worker's files, summed; from this process's registry come only the
`cargobay_` metrics no file holds (collectors that compute their values when asked, such as a queue
depth read from storage), since the rest would count this worker alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .multiprocess import current_dir, forget_dead_workers
from .tally import flush_all

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "cargobay_"


class Everything:
    """A Collector of all of it, for `generate_latest`."""

    def __init__(self, extra: Sequence[Collector] = ()) -> None:
        self.extra = tuple(extra)

    def collect(self) -> Iterator[Metric]:
        path = current_dir()
        if path is None:
            yield from REGISTRY.collect()
        else:
            forget_dead_workers(path)
            summed: set[str] = set()
            for family in MultiProcessCollector(None, path).collect():  # type: ignore[no-untyped-call]
                summed.add(family.name)
                yield family
            for family in REGISTRY.collect():
                # Our counters, gauges and histograms are all in the files once they hold a value
                # (and empty until then); what is left computes its values when asked.
                if family.name.startswith(PREFIX) and family.name not in summed:
                    yield family
        for collector in self.extra:
            yield from collector.collect()


def render(extra: Sequence[Collector] = ()) -> bytes:
    flush_all()  # what this process counted since the last flush (registry.metrics.tally)
    return generate_latest(Everything(extra))
