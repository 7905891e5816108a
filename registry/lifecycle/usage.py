"""`registry usage [PREFIX] [--rebuild]`: storage used per quota (`policy.quotas`), read from the
usage storage keeps current (one listing per quota, so it is fast on S3 however many repositories
there are). A quota never counted before (configured on a store that already held content) is
rebuilt from the tree first, as `--rebuild` does for every quota shown.

With PREFIX, only the quotas it selects are shown: those whose glob starts with it or covers it as
a repository name. A PREFIX no quota selects is measured from the tree instead (the repositories it
names as a glob, or PREFIX and everything below it), without a limit."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from storage import RuleUsage, Storage, UsageRule

from ..settings import Settings
from .quota import human_size, matcher, usage_rules


def add_command(sub: Any) -> None:
    usage = sub.add_parser("usage", help="storage used per quota (policy.quotas): unique blobs the repositories "
                                         "each covers link")
    usage.add_argument("prefix", nargs="?", help="only the quotas whose glob starts with this or covers this "
                                                 "repository; measured from the tree if none does")
    usage.add_argument("--config", help="YAML settings file (CARGOBAY_* variables override it)")
    usage.add_argument("--root", help="filesystem storage root (storage.filesystem.root)")
    usage.add_argument("--rebuild", action="store_true",
                       help="recompute the usage of the quotas shown from the tree (after links were removed by "
                            "hand, or a registry ran without these quotas)")


def _selected(rules: list[tuple[UsageRule, int]], prefix: str | None) -> list[tuple[UsageRule, int]]:
    if not prefix:
        return rules
    return [(rule, limit) for rule, limit in rules if rule.pattern.startswith(prefix) or rule.matches(prefix)]


def _ad_hoc(prefix: str) -> UsageRule:
    if "*" in prefix or "?" in prefix:
        return UsageRule(prefix, matcher(prefix))
    own = prefix.rstrip("/")
    below = matcher(f"{own}/*")  # also validates the characters

    def own_or_below(name: str) -> bool:
        return name == own or below(name)

    return UsageRule(f"{own}/*", own_or_below)


def _row(usage: RuleUsage, limit: int | None) -> list[str]:
    share = f"{100 * usage.bytes / limit:.0f}%" if limit else "-"
    return [usage.pattern, human_size(usage.bytes), human_size(limit) if limit else "-", share, str(usage.blobs)]


def _print_table(rows: list[list[str]]) -> None:
    table = [["QUOTA", "USED", "LIMIT", "USE", "BLOBS"], *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def run(args: argparse.Namespace, settings: Settings) -> int:
    from storage import track

    from ..store import storage_driver

    storage = Storage(storage_driver(settings))
    configured = usage_rules(settings)
    selected = _selected(configured, args.prefix)
    if not selected and args.prefix:
        rule = _ad_hoc(args.prefix)
        _print_table([_row(track(storage, []).measure(rule), None)])
        print(f"(no quota covers {args.prefix}: measured from the tree)", file=sys.stderr)
        return 0
    if not selected:
        print("no quotas configured (policy.quotas)", file=sys.stderr)
        return 0
    index = track(storage, [rule for rule, _ in selected])
    stale = [rule for rule, _ in selected if args.rebuild or index.built_at(rule) is None]
    for report in index.rebuild(stale) if stale else ():
        print(f"rebuilt {report.pattern} from the tree: {report.added} markers added, {report.removed} removed",
              file=sys.stderr)
    _print_table([_row(index.usage(rule), limit) for rule, limit in selected])
    return 0
