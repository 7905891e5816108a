"""`registry retention [--dry-run]`: the retention rules applied once (registry.lifecycle.retention),
one line per tag or manifest removed with why, then a summary."""

from __future__ import annotations

import argparse
import time
from typing import Any

from storage import Storage

from ..settings import Settings
from .retention import apply, plan, summary


def add_command(sub: Any) -> None:
    command = sub.add_parser("retention", help="remove the tags and untagged manifests retention.rules say go "
                                               "(their blobs go at the next gc)")
    command.add_argument("--config", help="YAML settings file (CARGOBAY_* variables override it)")
    command.add_argument("--root", help="filesystem storage root (storage.filesystem.root)")
    command.add_argument("--dry-run", action="store_true", help="list what would go and why, remove nothing")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ..operations import events_for
    from ..store import storage_driver

    storage = Storage(storage_driver(settings))
    planned = plan(storage, settings, time.time())
    done = planned if args.dry_run else apply(storage, planned, events_for(settings, storage))
    verb = "would remove" if args.dry_run else "removed"
    for removal in done:
        print(f"{verb} {removal.describe()}")
    print(summary(done, args.dry_run))
    return 0
