"""Metrics summed over several uvicorn workers: prometheus_client's multiprocess mode.

Each worker process keeps its values in memory-mapped files in one directory
(`PROMETHEUS_MULTIPROC_DIR`), and whichever worker a scrape reaches sums every worker's files
(registry.metrics.exposition). prometheus_client decides on its mode when it is first imported, so
`registry serve` prepares the directory (`multiprocess_dir`) before anything imports it, and the
worker processes it starts inherit the variable:

- with several workers, a fresh private directory, removed when the server stops;
- a directory the operator named in `PROMETHEUS_MULTIPROC_DIR` is used as given (e.g. on a
  tmpfs), emptied at start and at exit, because files of an earlier run would be summed in;
- one worker and no variable: no directory, plain in-process metrics.

This module imports nothing of prometheus_client at import time, for that reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("cargobay.registry")
ENV = "PROMETHEUS_MULTIPROC_DIR"
#: prometheus_client's file of a gauge summed over live processes only: `gauge_live<mode>_<pid>.db`.
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


@contextlib.contextmanager
def multiprocess_dir(workers: int, enabled: bool = True) -> Iterator[Path | None]:
    """The directory the worker processes keep their metrics in, for as long as the server runs
    (None when metrics stay in the one process)."""
    given = os.environ.get(ENV)
    if not enabled or (workers <= 1 and not given):
        yield None
        return
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        _empty(path)
    else:
        path = Path(tempfile.mkdtemp(prefix="cargobay-metrics-"))
        os.environ[ENV] = str(path)
    try:
        yield path
    finally:
        if given:
            _empty(path)
        else:
            shutil.rmtree(path, ignore_errors=True)
            os.environ.pop(ENV, None)


def _empty(path: Path) -> None:
    for file in path.glob("*.db"):
        with contextlib.suppress(FileNotFoundError):
            file.unlink()


def current_dir() -> str | None:
    """The directory this process's metrics live in, when they are shared with other processes."""
    return os.environ.get(ENV) or None


def forget_dead_workers(path: str) -> None:
    """Drop the gauges of worker processes that are gone (uvicorn replaces a worker that died): an
    upload in progress in a dead worker is in progress nowhere. Counters of the dead stay: what they
    counted happened."""
    from prometheus_client import multiprocess

    dead: set[int] = set()
    for name in os.listdir(path):
        match = _LIVE_GAUGE_FILE.match(name)
        if match is not None and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process has the number now: not ours to judge
    return True
