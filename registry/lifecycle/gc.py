"""`registry gc`: one garbage collection (registry.lifecycle.collection) with progress on a
terminal and its summary (docs/lifecycle.md)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from storage import Storage

from ..settings import Settings, parse_duration
from .collection import collect_garbage, summary


def add_command(sub: Any) -> None:
    gc = sub.add_parser("gc", help="remove blobs no manifest references, beside running servers: a push that was "
                                   "answered success never loses what it refers to (docs/lifecycle.md)")
    gc.add_argument("--config", help="YAML settings file (CARGOBAY_* variables override it)")
    gc.add_argument("--root", help="filesystem storage root (storage.filesystem.root)")
    gc.add_argument("--dry-run", action="store_true", help="report what would be removed, remove nothing")
    gc.add_argument("--wait", action="store_true",
                    help="when another replica is collecting (it holds the lease), wait for it, then collect")
    gc.add_argument("--grace", help="keep blobs written more recently than this (a push may be in flight); "
                                    "default gc.grace (1h)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ..operations import events_for
    from ..store import storage_driver

    grace = parse_duration(args.grace, "--grace") if args.grace else settings.gc.grace
    progress = TerminalProgress(sys.stderr) if sys.stderr.isatty() else None
    storage = Storage(storage_driver(settings))
    events = events_for(settings, storage)
    while True:
        report = collect_garbage(storage, settings, events, grace, args.dry_run, progress=progress)
        if report.held_by is None or not args.wait:
            break
        time.sleep(1.0)
    if progress is not None:
        progress.clear()
    if report.held_by is not None:
        until = time.strftime("%H:%M:%S", time.localtime(report.held_until))
        print(f"registry: not collected: collector {report.held_by} holds the lease until {until} "
              "(another replica is collecting)", file=sys.stderr)
        return 1
    for line in summary(report, args.dry_run, bool(settings.proxy.upstreams)):
        print(line)
    return 0


_LABELS = {"walk": "walking repositories: {done} keys", "manifests": "reading manifests: {done}/{total}",
           "blobs": "walking blobs: {done}", "sweep": "deleting blobs: {done}/{total}"}


class TerminalProgress:
    """One line on a terminal, rewritten in place: what the collection is at."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.out.write("\r\x1b[K" + _LABELS.get(stage, stage).format(done=done, total=total))
        self.out.flush()

    def clear(self) -> None:
        self.out.write("\r\x1b[K")
        self.out.flush()
