"""Reading the trail back (`registry audit`): entries from the journal in storage or from an audit
file, filtered, oldest first.

Both sources hold entries in the order they were written, which is their time order but for the
moments between an event and its write (a request's few milliseconds; a worker that wrote a
little later than another). `in_time_order` puts that right with a window: an entry is let out
once one at least `WINDOW` seconds younger has been read, so the output is in time order while
memory holds only the window's entries. An entry later than that by more would come out of order,
never go missing.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from storage import Journal

from .entry import parse_time

#: How much later than its own time an entry may be written and still come out in order.
WINDOW = 300.0


@dataclass(frozen=True, slots=True)
class Found:
    """An entry as read: its fields, its time, and its line exactly as stored (for `--json`)."""

    entry: dict[str, Any]
    time: float
    line: str


@dataclass
class Query:
    since: float | None = None
    until: float | None = None
    repositories: Sequence[re.Pattern[str]] = ()
    actions: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    #: Lines that were no entry (a torn or foreign line), counted rather than shown.
    skipped: int = field(default=0)

    def matches(self, found: Found) -> bool:
        entry = found.entry
        if self.since is not None and found.time < self.since:
            return False
        if self.until is not None and found.time > self.until:
            return False
        if self.actions and entry.get("action") not in self.actions:
            return False
        if self.users and entry.get("user") not in self.users:
            return False
        if self.repositories:
            name = entry.get("repository")
            return isinstance(name, str) and any(p.fullmatch(name) for p in self.repositories)
        return True

    def parse(self, lines: Iterable[str]) -> Iterator[Found]:
        for line in lines:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                found = Found(entry, parse_time(entry["time"]), line.rstrip("\r\n"))
            except (ValueError, KeyError, TypeError):  # not JSON, not an object, no time
                self.skipped += 1
                continue
            yield found

    def from_journal(self, journal: Journal) -> Iterator[Found]:
        """The journal's matching entries, oldest first. A batch holds entries from before it was
        written, so batches from before `since` are not even read."""
        until = None if self.until is None else self.until + WINDOW
        lines = (line for batch in journal.batches(self.since, until) for line in batch.lines)
        return self._chosen(self.parse(lines))

    def from_file(self, path: str) -> Iterator[Found]:
        """The file's matching entries, oldest first (the file is read as a stream)."""
        with open(path, encoding="utf-8", errors="replace") as f:
            yield from self._chosen(self.parse(f))

    def _chosen(self, found: Iterable[Found]) -> Iterator[Found]:
        return (item for item in in_time_order(found) if self.matches(item))


def in_time_order(found: Iterable[Found], window: float = WINDOW) -> Iterator[Found]:
    """`found` (in the order written) in time order, holding at most `window` seconds of entries;
    entries of the same time keep the order they were written in."""
    held: list[tuple[float, int, Found]] = []
    for seq, item in enumerate(found):
        heapq.heappush(held, (item.time, seq, item))
        while held and held[0][0] < item.time - window:
            yield heapq.heappop(held)[2]
    while held:
        yield heapq.heappop(held)[2]
