"""`registry audit`: the trail's entries, oldest first, one readable line each (or as stored with
`--json`), from storage, or from a file (`--file`; `audit.path` when only that is on), filtered by
repository glob, time, action and user. A bad flag is one line and exit status 2 (raised as
SettingsError, which `registry` prints)."""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..settings import Settings, SettingsError, parse_duration

if TYPE_CHECKING:
    from .query import Found, Query


def add_command(sub: Any) -> None:
    audit = sub.add_parser("audit", help="print the audit trail: every change and every refusal, who and from where "
                                         "(docs/operations.md)")
    audit.add_argument("--repo", action="append", default=[], metavar="GLOB",
                       help="only repositories the glob names (as in the access rules: * crosses /); repeatable")
    audit.add_argument("--since", metavar="WHEN", help="only entries from then on: a duration ago (7d, 12h, 30m) "
                                                       "or a time (2026-12-07, 2026-12-07T10:00:00Z; UTC unless it "
                                                       "says otherwise)")
    audit.add_argument("--until", metavar="WHEN", help="only entries up to then (as --since)")
    audit.add_argument("--action", action="extend", nargs="+", default=[], metavar="ACTION",
                       help="only these actions (manifest.push, tag.move, push.refused, ...; globs such as tag.* too)")
    audit.add_argument("--user", action="append", default=[], metavar="USER", help="only this user's; repeatable")
    audit.add_argument("--json", action="store_true", help="print the entries as stored, one JSON object per line")
    audit.add_argument("--file", metavar="PATH", help="read this audit file (audit.path) instead of storage")
    audit.add_argument("--config", help="YAML settings file (CARGOBAY_* variables override it)")
    audit.add_argument("--root", help="filesystem storage root (storage.filesystem.root)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from .entry import readable
    from .query import Query

    now = time.time()
    query = Query(since=_when(args.since, "--since", now), until=_when(args.until, "--until", now),
                  repositories=_globs(args.repo), actions=_actions(args.action), users=frozenset(args.user))
    if query.since is not None and query.until is not None and query.since > query.until:
        raise SettingsError("--since is later than --until: no entry can match")
    found: Iterator[Found] = _source(args, settings, query)
    printed = 0
    try:
        for item in found:
            print(item.line if args.json else readable(item.entry))
            printed += 1
        sys.stdout.flush()
    except BrokenPipeError:  # `registry audit | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if query.skipped:
        print(f"registry: skipped {query.skipped} lines that are no audit entries", file=sys.stderr)
    if not printed and not args.file and not settings.audit.storage:
        print("registry: no entries; audit.storage is off in these settings (give --config the servers' settings, "
              "or --file their audit.path)", file=sys.stderr)
    return 0


def _source(args: argparse.Namespace, settings: Settings, query: Query) -> Iterator[Found]:
    if args.file:
        return query.from_file(args.file)
    if settings.audit.path and not settings.audit.storage:
        return query.from_file(settings.audit.path)
    from storage import Storage, open_journal

    from ..store import storage_driver
    from .trail import JOURNAL

    return query.from_journal(open_journal(Storage(storage_driver(settings)), JOURNAL))


def _when(value: str | None, flag: str, now: float) -> float | None:
    """`7d` (that long before now) or an ISO 8601 date or time."""
    if value is None:
        return None
    try:
        return now - parse_duration(value, flag)
    except SettingsError:
        pass
    from .entry import parse_time

    try:
        return parse_time(value)
    except ValueError:
        raise SettingsError(f"{flag}: {value!r} is neither a duration (7d, 12h, 30m) nor a time "
                            "(2026-12-07, 2026-12-07T10:00:00Z)") from None


def _globs(globs: list[str]) -> list[re.Pattern[str]]:
    from ..auth.rules import RulesError, compile_pattern

    try:
        return [compile_pattern(glob) for glob in globs]
    except RulesError as exc:
        raise SettingsError(f"--repo: {exc}") from None


def _actions(patterns: list[str]) -> frozenset[str]:
    from .entry import AUDITED

    chosen: set[str] = set()
    for pattern in patterns:
        matched = fnmatch.filter(AUDITED, pattern)
        if not matched:
            raise SettingsError(f"--action: {pattern!r} is no audited action (those are {', '.join(AUDITED)})")
        chosen.update(matched)
    return frozenset(chosen)
