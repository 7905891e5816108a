"""Failed logins, counted per client address and per user name over a sliding window.

Once either count reaches its limit, every login attempt from that address or for that user is
refused with 429 until enough failures have aged out of the window, so a correct password does
not help a guesser who has used up the allowance. The counts live in the process (one set per
uvicorn worker) and memory stays bounded: the oldest keys are forgotten past `max_keys`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable


class FailureLimiter:
    def __init__(self, address_limit: int, user_limit: int, window: float, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.address_limit, self.user_limit, self.window = address_limit, user_limit, window
        self._max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        # Attempts whose password check is still running count against the limit too: otherwise a
        # guesser could keep many checks in flight at once and get them all past the check.
        self._pending: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def _keys(self, address: str, user: str | None) -> list[tuple[tuple[str, str], int]]:
        return [(("addr", address), self.address_limit)] + ([(("user", user), self.user_limit)] if user else [])

    def _wait(self, address: str, user: str | None, now: float) -> float:
        wait = 0.0
        for key, limit in self._keys(address, user):
            times = self._recent(key, now)
            failures = len(times) if times is not None else 0
            if failures + self._pending[key] >= limit:
                if times is not None and failures >= limit:
                    wait = max(wait, times[failures - limit] + self.window - now)
                else:
                    wait = max(wait, 1.0)  # blocked by checks in flight: they end within a second
        return wait

    def blocked_for(self, address: str, user: str | None) -> float:
        """Seconds until an attempt from `address` for `user` may be made; 0 when it may now."""
        with self._lock:
            return self._wait(address, user, self._clock())

    def retry_after(self, address: str, user: str | None) -> int | None:
        """`Retry-After` seconds when blocked, None otherwise."""
        wait = self.blocked_for(address, user)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def begin(self, address: str, user: str | None) -> int | None:
        """Start an attempt: `Retry-After` seconds when blocked (nothing started), else None; an
        attempt that started must be ended with `end`."""
        with self._lock:
            wait = self._wait(address, user, self._clock())
            if wait > 0:
                return max(1, math.ceil(wait))
            for key, _ in self._keys(address, user):
                self._pending[key] += 1
            return None

    def end(self, address: str, user: str | None, failed: bool) -> None:
        with self._lock:
            for key, _ in self._keys(address, user):
                self._pending[key] -= 1
                if self._pending[key] <= 0:
                    del self._pending[key]
        if failed:
            self.failed(address, user)

    def failed(self, address: str, user: str | None) -> None:
        now = self._clock()
        with self._lock:
            keys = [("addr", address)] + ([("user", user)] if user else [])
            for key in keys:
                times = self._recent(key, now)
                if times is None:
                    times = self._failures[key] = deque()
                times.append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > self._max_keys:
                self._failures.popitem(last=False)
