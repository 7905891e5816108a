"""The operations page and what it shows: the pull-through upstreams and how they have been answering
(this process's view: registry.proxy.health), usage against each quota, and the last garbage
collection and retention runs (recorded in storage by whichever replica or command ran them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from ocispec.errors import ErrorCode
from storage import Storage, StorageError

from ..context import context
from ..errors import RegistryError
from ..handlers.base import run
from ..lifecycle import quota
from ..proxy import PullThrough, UpstreamHealth
from .render import page
from .viewer import Viewer

if TYPE_CHECKING:  # made by create_app; only the type is needed here
    from ..lifecycle.quota import Quotas

JOBS = ("gc", "retention")


@dataclass(frozen=True)
class UpstreamRow:
    host: str
    url: str
    tag_ttl: float
    health: UpstreamHealth


@dataclass(frozen=True)
class QuotaRow:
    prefix: str                 # the quota's repositories glob
    limit: int
    used: int | None            # None: the usage could not be read now
    blobs: int | None

    @property
    def percent(self) -> int | None:
        return None if self.used is None or not self.limit else min(100, round(100 * self.used / self.limit))


@dataclass(frozen=True)
class JobRow:
    job: str
    last: dict[str, Any] | None  # the recorded run (`finished`, its figures), None: never ran

    @property
    def figures(self) -> list[tuple[str, Any]]:
        return sorted((k, v) for k, v in (self.last or {}).items() if k not in ("job", "finished"))


def upstreams(proxy: PullThrough | None) -> list[UpstreamRow]:
    if proxy is None:
        return []
    return [UpstreamRow(h.host, proxy.upstreams[h.host].url, proxy.upstreams[h.host].tag_ttl, h)
            for h in proxy.health.snapshot()]


def quotas(quotas: Quotas | None) -> list[QuotaRow]:
    """Each quota's usage (one listing of its markers)."""
    if quotas is None:
        return []
    rows = []
    for rule in quotas.index.rules:
        try:
            usage = quotas.index.usage(rule)
            used: int | None = usage.bytes
            blobs: int | None = usage.blobs
        except StorageError:
            used = blobs = None
        rows.append(QuotaRow(rule.pattern, quotas.limits[rule.id], used, blobs))
    return rows


def jobs(storage: Storage) -> list[JobRow]:
    rows = []
    for job in JOBS:
        try:
            rows.append(JobRow(job, storage.last_run(job)))
        except StorageError:
            rows.append(JobRow(job, None))
    return rows


async def operations(request: Request, viewer: Viewer) -> Response:
    if not viewer.catalog:
        raise RegistryError(ErrorCode.DENIED, "the operations page needs the catalog right", status=403)
    ctx = context(request)
    return page(request, "operations.html", title="Operations", upstreams=upstreams(ctx.proxy),
                quotas=await run(quotas, quota.of(request)), jobs=await run(jobs, ctx.storage))
