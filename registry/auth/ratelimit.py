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
from collections import OrderedDict, deque
from typing import Callable


class FailureLimiter:
    def __init__(self, address_limit: int, user_limit: int, window: float, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.address_limit, self.user_limit, self.window = address_limit, user_limit, window
        self._max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
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

    def blocked_for(self, address: str, user: str | None) -> float:
        """Seconds until an attempt from `address` for `user` may be made; 0 when it may now."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            checks = [(("addr", address), self.address_limit)]
            if user:
                checks.append((("user", user), self.user_limit))
            for key, limit in checks:
                times = self._recent(key, now)
                if times is not None and len(times) >= limit:
                    wait = max(wait, times[len(times) - limit] + self.window - now)
        return wait

    def retry_after(self, address: str, user: str | None) -> int | None:
        """`Retry-After` seconds when blocked, None otherwise."""
        wait = self.blocked_for(address, user)
        return max(1, math.ceil(wait)) if wait > 0 else None

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
