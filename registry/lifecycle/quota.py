"""Quotas (`policy.quotas`): a storage limit per repository glob, counted on the unique blobs the
repositories it covers link (storage.usage keeps that count in storage, current on every replica).

`Quotas.check` runs where a push would link a blob (an upload's completion, a mount), before the
blob becomes visible in the repository: a blob the rule already counts adds nothing (re-pushing a
shared base layer is always allowed); one that would take the rule past its limit is 403 DENIED
naming the rule, its usage and the size asked. Two pushes completing at the same instant on
different replicas can each pass a check the pair together would not (the limit is enforced per
blob, not transactionally); the next blob is refused.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from starlette.requests import Request

from ocispec.digest import Digest
from ocispec.errors import ErrorCode
from storage import BlobUnknown, Repository, Storage, UploadUnknown, UsageIndex, UsageRule, track

from ..auth.rules import RulesError, compile_pattern
from ..errors import RegistryError
from ..handlers.base import run
from ..settings import Settings

log = logging.getLogger("cargobay.lifecycle")


def usage_rules(settings: Settings) -> list[tuple[UsageRule, int]]:
    """Each configured quota as a storage usage rule (its glob compiled as access rules' are: `*`
    matches across `/`) with its limit in bytes. A bad glob is a RulesError naming it."""
    rules: list[tuple[UsageRule, int]] = []
    for i, quota in enumerate(settings.policy.quotas):
        try:
            rules.append((UsageRule(quota.repositories, matcher(quota.repositories)), quota.limit))
        except RulesError as exc:
            raise RulesError(f"policy.quotas[{i}].repositories: {exc}") from None
    return rules


def matcher(glob: str) -> Callable[[str], bool]:
    """Whether a repository name matches `glob` (registry.auth.rules' globs; RulesError if bad)."""
    pattern = compile_pattern(glob)

    def matches(name: str) -> bool:
        return pattern.fullmatch(name) is not None

    return matches


def human_size(size: int) -> str:
    """`1.5 GiB`, `300 B`: sizes in messages and `registry usage`."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class Quotas:
    """The quotas of one running registry. Creating it starts counting usage in `storage` (every
    link this process writes from then on, storage.usage.track)."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        configured = usage_rules(settings)
        self.limits = {rule.id: limit for rule, limit in configured}
        self.index: UsageIndex = track(storage, [rule for rule, _ in configured])
        self._built: set[str] = set()
        self._lock = threading.Lock()

    def check(self, repository: str, digest: Digest, size: int) -> None:
        """Raise 403 DENIED if linking `digest` (`size` bytes) into `repository` would take a
        quota covering it past its limit. Synchronous (storage calls): run it in the thread pool."""
        for rule in self.index.rules_for(repository):
            self._ensure_built(rule)
            if self.index.counts(rule, digest):
                continue  # a shared layer, a retry: the usual case answers without a listing
            usage = self.index.usage(rule)
            if digest in usage.digests:
                continue  # already counted: linking it here adds nothing
            limit = self.limits[rule.id]
            if usage.bytes + size > limit:
                raise RegistryError(
                    ErrorCode.DENIED,
                    f"quota {rule.pattern} exceeded: {human_size(usage.bytes)} of {human_size(limit)} used, "
                    f"this blob needs {human_size(size)} more",
                    detail={"quota": rule.pattern, "limit": limit, "used": usage.bytes, "requested": size},
                    status=403)

    def _ensure_built(self, rule: UsageRule) -> None:
        """A rule never rebuilt does not know what its repositories held before it was counted:
        rebuild it from the tree once (per process; replicas racing do the same idempotent work)."""
        if rule.id in self._built:
            return
        with self._lock:
            if rule.id in self._built:
                return
            if self.index.built_at(rule) is None:
                [report] = self.index.rebuild([rule])
                log.info("quota %s: usage rebuilt from the tree (%d blob links counted)", rule.pattern, report.added)
            self._built.add(rule.id)


def install(storage: Storage, settings: Settings) -> Quotas | None:
    """The registry's quotas (None when none are configured); create_app keeps them in
    `app.state.quotas`."""
    return Quotas(storage, settings) if settings.policy.quotas else None


def of(request: Request) -> Quotas | None:
    quotas: Quotas | None = getattr(request.app.state, "quotas", None)
    return quotas


async def before_upload_link(request: Request, repo: Repository, upload_id: str, digest: Digest) -> None:
    """The check before an upload's bytes (all received) are verified and linked; a refused
    upload is cancelled (its bytes would only wait for the purge)."""
    quotas = of(request)
    if quotas is None:
        return
    status = await run(repo.uploads.status, upload_id)
    try:
        await run(quotas.check, repo.name, digest, status.size)
    except RegistryError:
        try:
            await run(repo.uploads.cancel, upload_id)
        except UploadUnknown:
            pass
        raise


async def before_mount(request: Request, repo: Repository, source: Repository, digest: Digest) -> None:
    """The check before a mount links the source's blob: refused outright rather than answered
    with an upload that would be refused at its end."""
    quotas = of(request)
    if quotas is None:
        return
    try:
        size = (await run(source.blobs.stat, digest)).size
    except BlobUnknown:
        return  # nothing to mount: the client uploads instead, and that upload is checked
    await run(quotas.check, repo.name, digest, size)
