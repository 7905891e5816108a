"""How each upstream has been answering this process: when it last answered, when it last failed,
how often the cache stood in for it with a stale answer (the web console's operations page).

Kept in memory per process (each worker tells what it saw); `Upstream` records its answers, and the
cache's observer (`observe`, chained before the metrics') its failures and stale answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

#: What the cache tells its observers of each answer (registry.proxy.cache): from its store, fetched
#: upstream, served stale from its store because the upstream failed, or the upstream's failure.
HIT, MISS, STALE, UPSTREAM_ERROR = "hit", "miss", "stale", "error"


@dataclass(frozen=True)
class UpstreamHealth:
    host: str
    last_success: float | None = None
    last_failure: float | None = None
    failures: int = 0
    stale_answers: int = 0

    @property
    def state(self) -> str:
        """`up` (its last call answered), `down` (its last call failed), or `unknown` (never asked)."""
        if self.last_failure is not None and (self.last_success is None or self.last_failure > self.last_success):
            return "down"
        return "up" if self.last_success is not None else "unknown"


class HealthBoard:
    def __init__(self, hosts: list[str]) -> None:
        self._lock = threading.Lock()
        self._health = {host: UpstreamHealth(host) for host in hosts}

    def answered(self, host: str) -> None:
        at = time.time()
        self._update(host, lambda now: replace(now, last_success=at))

    def observe(self, host: str, kind: str, outcome: str) -> None:
        """The cache's observer (`CacheObserver`): failures and stale answers, by upstream."""
        if outcome == UPSTREAM_ERROR:
            at = time.time()
            self._update(host, lambda now: replace(now, last_failure=at, failures=now.failures + 1))
        elif outcome == STALE:
            self._update(host, lambda now: replace(now, stale_answers=now.stale_answers + 1))

    def _update(self, host: str, change: Callable[[UpstreamHealth], UpstreamHealth]) -> None:
        with self._lock:
            now = self._health.get(host)
            if now is not None:  # an upstream the settings name (the board knows no other)
                self._health[host] = change(now)

    def snapshot(self) -> list[UpstreamHealth]:
        with self._lock:
            return sorted(self._health.values(), key=lambda h: h.host)
