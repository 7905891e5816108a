"""`PullThrough`: manifests, tags and tag lists of cached upstream repositories.

A cached repository is an ordinary repository of the store under its canonical name
(`docker.io/library/redis`, registry.proxy.routing); what the cache adds is where its content comes
from the first time and when a tag is asked again:
- by digest: once stored (verified by distclient against the digest asked for), always served from
  the store; the upstream is never asked again;
- by tag: within the upstream's `tag_ttl` (counted from when the tag link was last written) from the
  store; after it, one HEAD upstream; a GET (by the new digest) only when it moved. When the upstream
  fails (anything but a 404), the cached answer is served and the log says it is stale;
- indexes are stored whole (a sparse index: children come when a client asks for them).
Concurrent misses of one thing make one upstream request per process (registry.proxy.flight).
Everything lives in storage, so every replica over the same bucket shares the cache.

What happens is told to an observer (the metrics), `observe(upstream host, kind, outcome)`: `hit`
(answered from the store, the upstream not asked for the content), `miss` (asked the upstream for
it: once per fetch, however many requests wait for that fetch), `stale` (the upstream failed and
the store answered), `error` (an upstream request failed: anything but a 404).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from distclient import ClientError
from ocispec.digest import Digest
from ocispec.errors import ErrorCode
from storage import (
    CACHED_MANIFEST_RULES,
    ManifestInvalid,
    ManifestUnknown,
    Repository,
    Storage,
    StoredManifest,
)

from ..errors import RegistryError
from ..handlers.base import run
from ..settings import Settings
from .answers import can_serve_stale, upstream_failure
from .flight import Flights
from .health import HIT, MISS, STALE, UPSTREAM_ERROR, HealthBoard
from .routing import NameRouter
from .upstream import Upstream

log = logging.getLogger("cargobay.proxy")

#: A cached manifest or blob is marked as pulled (its link rewritten, what `proxy.keep_for` counts)
#: at most this often per process: a pull is a read, and most reads should stay reads.
TOUCH_INTERVAL = 3600.0
#: `observe(upstream host, kind, outcome)`: kind `manifest`, `blob` or `tags`, outcome one of the above.
CacheObserver = Callable[[str, str, str], None]


def _unobserved(host: str, kind: str, outcome: str) -> None:
    return None


class Touches:
    """Remembers what this process marked as pulled lately, so a busy tag costs one write an hour."""

    def __init__(self, capacity: int = 100_000, interval: float = TOUCH_INTERVAL) -> None:
        self._last: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity
        self._interval = interval

    def due(self, kind: str, repository: str, digest: Digest) -> bool:
        key = (kind, repository, str(digest))
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                return False
            self._last[key] = now
            self._last.move_to_end(key)
            while len(self._last) > self._capacity:
                self._last.popitem(last=False)
            return True


class PullThrough:
    """The cache's state in one process: the upstreams, the naming rules, flights and touches."""

    def __init__(self, settings: Settings, storage: Storage, environ: Mapping[str, str] | None = None,
                 observe: CacheObserver | None = None) -> None:
        self.storage = storage
        #: Each upstream's answers, failures and stale answers in this process (the console's operations page).
        self.health = HealthBoard([u.host for u in settings.proxy.upstreams])
        metrics = observe or _unobserved

        def observe_both(host: str, kind: str, outcome: str) -> None:
            self.health.observe(host, kind, outcome)
            metrics(host, kind, outcome)

        self.observe: CacheObserver = observe_both
        self.router = NameRouter(settings.proxy)
        self.upstreams = {u.host: Upstream(u, settings.proxy, environ, self.health.answered)
                          for u in settings.proxy.upstreams}
        self.flights = Flights()
        self.touches = Touches()
        self.max_tags = settings.limits.max_page_size * 100

    # -- names -----------------------------------------------------------------------------------
    def upstream_of(self, name: str) -> Upstream | None:
        """The upstream a canonical repository name belongs to; None for a local repository."""
        host = self.router.upstream_of(name)
        return self.upstreams[host] if host is not None else None

    def source(self, repo: Repository) -> tuple[Upstream, str]:
        """(the upstream, its own name for the repository); NAME_UNKNOWN for names its
        `repositories` globs do not allow."""
        upstream = self.upstream_of(repo.name)
        if upstream is None:
            raise RegistryError(ErrorCode.NAME_UNKNOWN, f"{repo.name} is not a cached upstream repository")
        remote = repo.name.split("/", 1)[1]
        if not upstream.allows(remote):
            raise RegistryError(ErrorCode.NAME_UNKNOWN,
                                f"{remote} is not among the repositories this registry caches from {upstream.host}")
        return upstream, remote

    # -- manifests -------------------------------------------------------------------------------
    async def manifest(self, repo: Repository, reference: str) -> StoredManifest:
        """The manifest `reference` (a tag or a digest) names, from the cache or the upstream."""
        upstream, remote = self.source(repo)
        if ":" in reference:
            digest = Digest.parse(reference)
            stored = await run(self._stored, repo, digest)
            if stored is not None:
                self.observe(upstream.host, "manifest", HIT)
                return stored
            return await self.flights.run(("manifest", repo.name, str(digest)),
                                          lambda: run(self._fetch, repo, upstream, remote, reference, ()))
        info = await run(repo.tags.find, reference)
        if info is not None and time.time() - info.updated < upstream.tag_ttl:
            stored = await run(self._stored, repo, info.digest)
            if stored is not None:
                self.observe(upstream.host, "manifest", HIT)
                return stored
        return await self.flights.run(("tag", repo.name, reference),
                                      lambda: run(self._refresh_tag, repo, upstream, remote, reference))

    def _stored(self, repo: Repository, digest: Digest) -> StoredManifest | None:
        try:
            stored = repo.manifests.get(digest)
        except ManifestUnknown:
            return None
        if self.touches.due("manifest", repo.name, digest):
            try:
                repo.manifests.touch(digest)
            except ManifestUnknown:
                return None  # deleted since `get` believed its link (storage.recent_links): fetch it again
        return stored

    def _fetch(self, repo: Repository, upstream: Upstream, remote: str, identifier: str,
               tags: tuple[str, ...]) -> StoredManifest:
        """GET the manifest upstream (verified), store it whole and tag it; the upstream's failure
        as the client's answer."""
        what = f"{repo.name}:{identifier}" if ":" not in identifier else f"{repo.name}@{identifier}"
        self.observe(upstream.host, "manifest", MISS)
        try:
            fetched = upstream.get_manifest(remote, identifier)
        except ClientError as exc:
            self._failed(upstream, "manifest", exc)
            raise upstream_failure(exc, upstream.host, f"manifest {what}", ErrorCode.MANIFEST_UNKNOWN) from None
        try:
            result = repo.manifests.put(fetched.raw, fetched.media_type or None, fetched.digest, tags,
                                        CACHED_MANIFEST_RULES)
        except ManifestInvalid as exc:  # verified, but not a manifest this registry stores (e.g. schema 1)
            raise RegistryError(ErrorCode.MANIFEST_INVALID, f"upstream {upstream.host} served manifest {what}, "
                                f"which this registry cannot store: {exc}", status=502) from None
        log.info("cached %s (%s, %d bytes) from %s", what, result.digest, len(fetched.raw), upstream.host)
        return repo.manifests.get(result.digest)

    def _refresh_tag(self, repo: Repository, upstream: Upstream, remote: str, tag: str) -> StoredManifest:
        """A tag that is not cached, or whose tag_ttl has passed: ask the upstream (once) and serve the
        cached answer when the upstream cannot give a better one."""
        info = repo.tags.find(tag)  # again: another replica may have refreshed it meanwhile
        if info is None:
            return self._fetch(repo, upstream, remote, tag, (tag,))
        cached = self._stored(repo, info.digest)
        if cached is None:
            return self._fetch(repo, upstream, remote, tag, (tag,))
        if time.time() - info.updated < upstream.tag_ttl:
            self.observe(upstream.host, "manifest", HIT)
            return cached
        try:
            current = upstream.head_manifest(remote, tag)
        except ClientError as exc:
            self._failed(upstream, "manifest", exc)
            return self._stale(repo, tag, cached, upstream, exc)
        if current == info.digest:
            repo.tags.set(tag, info.digest)  # confirmed: trusted for another tag_ttl
            self.observe(upstream.host, "manifest", HIT)
            return cached
        try:
            return self._fetch(repo, upstream, remote, str(current) if current else tag, (tag,))
        except RegistryError as answer:
            if answer.status == 404:
                raise
            return self._stale(repo, tag, cached, upstream, answer)

    def _stale(self, repo: Repository, tag: str, cached: StoredManifest, upstream: Upstream,
               exc: ClientError | RegistryError) -> StoredManifest:
        if isinstance(exc, ClientError) and not can_serve_stale(exc):
            raise upstream_failure(exc, upstream.host, f"manifest {repo.name}:{tag}", ErrorCode.MANIFEST_UNKNOWN)
        self.observe(upstream.host, "manifest", STALE)
        log.warning("serving %s:%s from the cache, stale (%s): upstream %s failed: %s", repo.name, tag, cached.digest,
                    upstream.host, exc.message if isinstance(exc, (ClientError, RegistryError)) else exc)
        return cached

    # -- blobs -----------------------------------------------------------------------------------
    async def blob_size(self, upstream: Upstream, remote: str, repo: Repository, digest: Digest) -> int:
        self.observe(upstream.host, "blob", MISS)
        try:
            return await run(upstream.blob_size, remote, digest)
        except ClientError as exc:
            self._failed(upstream, "blob", exc)
            what = f"blob {digest} of {repo.name}"
            raise upstream_failure(exc, upstream.host, what, ErrorCode.BLOB_UNKNOWN) from None

    # -- tags ------------------------------------------------------------------------------------
    async def tags(self, repo: Repository) -> list[str]:
        """The upstream's tag list when it answers, else the cached tags."""
        upstream, remote = self.source(repo)
        self.observe(upstream.host, "tags", MISS)
        try:
            return sorted(set(await run(upstream.list_tags, remote, self.max_tags)))
        except ClientError as exc:
            self._failed(upstream, "tags", exc)
            cached = await run(_cached_tags, repo)
            if cached is None:
                raise upstream_failure(exc, upstream.host, f"tags of {repo.name}", ErrorCode.NAME_UNKNOWN) from None
            self.observe(upstream.host, "tags", STALE)
            log.warning("serving the tags of %s from the cache: upstream %s failed: %s", repo.name, upstream.host,
                        exc.message)
            return cached

    def _failed(self, upstream: Upstream, kind: str, exc: ClientError) -> None:
        if can_serve_stale(exc):
            self.observe(upstream.host, kind, UPSTREAM_ERROR)
        else:  # the upstream's 404 is an answer, not its failure
            self.health.answered(upstream.host)


def _cached_tags(repo: Repository) -> list[str] | None:
    return repo.tags.list() if repo.exists() else None

