"""Reading a registry's `/metrics` as Prometheus would: the text format parsed by prometheus_client's
own parser (a malformed exposition fails the test), samples looked up by name and labels."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [Sample(s.name, dict(s.labels), s.value)
                        for family in text_string_to_metric_families(text) for s in family.samples]
        self.families = {family.name for family in text_string_to_metric_families(text)}

    def matching(self, name: str, **labels: str) -> Iterator[Sample]:
        return (s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
        return sum(s.value for s in self.matching(name, **labels))

    def label_values(self) -> set[str]:
        return {value for s in self.samples for value in s.labels.values()}


def scrape(url: str, auth: tuple[str, str] | None = None, headers: dict[str, str] | None = None) -> Scrape:
    """GET `url` (a `/metrics`), asserting a 200 in the Prometheus text format."""
    r = httpx.get(url, auth=auth, headers=headers, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    return Scrape(r.text)
