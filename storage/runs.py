"""The last run of each lifecycle job (`gc`, `retention`), kept in storage (`v1/jobs/<job>/last`):
what it did and when it finished, the same for every replica and after restarts, whichever
process ran it (`registry serve`'s schedule or a `registry gc` from cron). The metrics and the
web console read it from here."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from . import paths
from .driver.base import StorageDriver
from .errors import PathNotFound


def record_run(driver: StorageDriver, job: str, figures: Mapping[str, Any], finished: float | None = None) -> None:
    """Replace `job`'s record with this run: `figures` (JSON values) and its end time."""
    body = {"job": job, "finished": finished or time.time(), **figures}
    driver.put(paths.job_last_run(job), json.dumps(body, sort_keys=True).encode())


def last_run(driver: StorageDriver, job: str) -> dict[str, Any] | None:
    """`job`'s last recorded run (with `finished`, a Unix time), or None: never run, or a record
    that is not one (debris is no run)."""
    try:
        record = json.loads(driver.get(paths.job_last_run(job)))
    except (PathNotFound, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("finished"), (int, float)):
        return None
    return record
