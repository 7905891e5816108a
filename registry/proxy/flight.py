"""Single flight: at most one upstream fetch of the same thing at a time in this process.

The first request for a key starts the job as a task of its own (a client that goes away does not
cancel a fetch that others wait for, nor a cache fill that is half done); every request for that key
while it runs awaits the same task, and gets its result or its exception. The key is gone when the
task ends, so the next miss (after a failure) tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class Flights:
    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[Any]] = {}

    def join(self, key: Hashable) -> asyncio.Task[Any] | None:
        """The task running for `key`, if any."""
        return self._running.get(key)

    def start(self, key: Hashable, job: Callable[[], Awaitable[T]]) -> tuple[asyncio.Task[T], bool]:
        """(the task for `key`, whether this call started it)."""
        running = self._running.get(key)
        if running is not None:
            return running, False
        task: asyncio.Task[T] = asyncio.ensure_future(job())
        self._running[key] = task

        def done(finished: asyncio.Task[T]) -> None:
            if self._running.get(key) is finished:
                del self._running[key]
            if not finished.cancelled():
                finished.exception()  # retrieved: a failure nobody awaited is not "never retrieved"

        task.add_done_callback(done)
        return task, True

    async def run(self, key: Hashable, job: Callable[[], Awaitable[T]]) -> T:
        """The result of `job` for `key`, run once however many callers ask at the same time."""
        task, _ = self.start(key, job)
        return await asyncio.shield(task)
