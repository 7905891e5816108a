"""`registry check [--repair]`: the scrub (storage.check). Every blob's size and digest and every
manifest's references are verified, and the listing index (the catalog's and tag lists' markers)
against the tree; each problem is one line on stdout (what, digest, repository, why), then a
summary; the exit status is 1 when anything is wrong, 0 when the store is clean. `--repair` removes
corrupt blobs and the links to them, and links naming what is gone (never without the flag, never a
manifest), then rebuilds the listing index; S3 multipart uploads no upload state names are reported only
(the scheduled upload purge and temp sweep abort them)."""

from __future__ import annotations

import argparse
from typing import Any

from storage import CACHED_MANIFEST_RULES, Finding, ManifestRules, Storage, scrub, track

from ..settings import Settings
from .quota import usage_rules


def add_command(sub: Any) -> None:
    check = sub.add_parser("check", help="verify every blob's digest and every manifest's references; "
                                         "exit 1 when anything is corrupt or missing")
    check.add_argument("--config", help="YAML settings file (CARGOBAY_* variables override it)")
    check.add_argument("--root", help="filesystem storage root (storage.filesystem.root)")
    check.add_argument("--repair", action="store_true",
                       help="remove corrupt blobs and the links to them, and links to what is gone "
                            "(manifests are never removed: a re-push restores what they name); "
                            "rebuild the listing index of the catalog and tags")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from ..store import storage_driver

    hosts = tuple(upstream.host.strip("/") + "/" for upstream in settings.proxy.upstreams)
    pushed = ManifestRules(allow_sparse_indexes=settings.validation.manifests.allow_sparse_indexes)

    def rules(name: str) -> ManifestRules:
        # What a push into that name was checked with: the pull-through cache stores manifests first.
        return CACHED_MANIFEST_RULES if hosts and name.startswith(hosts) else pushed

    def show(finding: Finding) -> None:
        print(finding, flush=True)

    storage = Storage(storage_driver(settings))
    if args.repair:
        track(storage, [rule for rule, _ in usage_rules(settings)])  # links it removes leave the quotas
    report = scrub(storage, repair=args.repair, rules=rules,
                   grace=settings.gc.grace, progress=show)
    for line in report.repaired:
        print(f"repaired: {line}")
    print(report.summary())
    return 0 if report.clean else 1
