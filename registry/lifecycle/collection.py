"""Garbage collection as `registry serve` runs it every `gc.interval`, and as `registry gc` does:
the settings' grace, lease ttl and pull-through expiry handed to `storage.collect`, the summary a
user reads, and what a finished collection leaves for the operator: its record in storage (the
metrics and the console read the last run there) and a `gc.run` event (the audit trail)."""

from __future__ import annotations

import logging

from storage import ExpiringRepositories, GcProgress, GcReport, Storage, collect

from ..events import Event, Events
from ..settings import Settings

log = logging.getLogger("cargobay.lifecycle")


def collect_garbage(storage: Storage, settings: Settings, events: Events, grace: float | None = None,
                    dry_run: bool = False, progress: GcProgress | None = None) -> GcReport:
    # What the pull-through cache keeps below its upstreams' hosts expires after proxy.keep_for.
    proxy = settings.proxy
    expiring = ExpiringRepositories(tuple(upstream.host for upstream in proxy.upstreams), proxy.keep_for)
    report = collect(storage, settings.gc.grace if grace is None else grace, dry_run, expiring=expiring,
                     lease_ttl=settings.gc.lease_ttl, progress=progress)
    if not dry_run and report.held_by is None:
        figures = figures_of(report)
        storage.record_run("gc", figures)
        told = "; ".join(summary(report, False, bool(proxy.upstreams)))
        events.record([Event("gc.run", figures=figures, detail=told)])
    return report


def figures_of(report: GcReport) -> dict[str, int]:
    """A collection's counts, as its run record and its event carry them."""
    return {"blobs_removed": len(report.swept), "bytes_freed": report.bytes_freed, "links_removed": report.unlinked,
            "blobs_kept": report.blobs_kept, "manifests_kept": report.manifests_kept,
            "manifests_expired": report.expired_manifests, "milliseconds": int(report.seconds * 1000)}


def scheduled(storage: Storage, settings: Settings, events: Events) -> None:
    """The `gc.interval` job: one collection, its summary as one log line."""
    report = collect_garbage(storage, settings, events)
    if report.held_by is not None:
        log.info("gc: skipped, collector %s holds the lease", report.held_by)
        return
    log.info("gc: %s", "; ".join(summary(report, False, bool(settings.proxy.upstreams))))


def summary(report: GcReport, dry_run: bool, caching: bool) -> list[str]:
    verb = "would remove" if dry_run else "removed"
    expired = (f"{report.expired_manifests} cached manifests not pulled within proxy.keep_for, " if caching else "")
    spared = f", {report.spared} spared because a push linked them meanwhile" if report.spared else ""
    return [
        f"kept {report.blobs_kept} blobs and {report.manifests_kept} manifests",
        f"{verb} {expired}{len(report.swept)} blobs ({_bytes(report.bytes_freed)}) "
        f"and {report.unlinked} repository links{spared}",
        f"took {report.seconds:.1f} s",
    ]


def _bytes(count: int) -> str:
    return f"{count} bytes" if count < 1024 else f"{count} bytes, {_size(count)}"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
