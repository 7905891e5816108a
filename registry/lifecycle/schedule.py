"""The lifecycle jobs `registry serve` runs on a schedule (`gc.interval`, `retention.interval`…):
each is a synchronous function of the store and the settings, run in the thread pool every
`interval` seconds (the first run one interval after start); a failure is one log line, and the
next run comes as planned."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from storage import Storage

from ..events import Events
from ..handlers.base import run
from ..settings import Settings

log = logging.getLogger("cargobay.lifecycle")


@dataclass(frozen=True)
class Job:
    name: str
    interval: float
    work: Callable[[Storage, Settings, Events], None]


def jobs(settings: Settings) -> list[Job]:
    """The jobs these settings turn on. Each lifecycle module that has one adds it here."""
    from . import collection, retention

    planned: list[Job] = [Job("gc", settings.gc.interval, collection.scheduled),
                          Job("retention", settings.retention.interval, retention.scheduled)]
    return [job for job in planned if job.interval > 0]


async def run_every(job: Job, storage: Storage, settings: Settings, events: Events) -> None:
    while True:
        await asyncio.sleep(job.interval)
        try:
            await run(job.work, storage, settings, events)
        except Exception as exc:  # one line; the next run comes as planned
            log.error("%s failed: %s", job.name, " ".join(str(exc).split()) or type(exc).__name__)
