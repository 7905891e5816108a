"""The GET and HEAD handlers of cached upstream repositories (registry.routes uses them for names
that belong to an upstream; their writes are refused there). Each makes sure the content is in
the store, then answers exactly as for a local repository, through the same repository views."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from ocispec.digest import Digest
from ocispec.errors import ErrorCode
from storage import Repository

from ..context import context
from ..errors import RegistryError
from ..handlers import blobs, manifests
from ..handlers.base import json_response, paginate, path_digest, repository, run, run_small
from .cache import PullThrough
from .health import HIT, MISS, UPSTREAM_ERROR
from .tee import ClientStream, TeeResponse, client_stream, fetch_into
from .upstream import Upstream


def pull_through(request: Request) -> PullThrough:
    proxy = context(request).proxy
    if proxy is None:  # routes only send cached names here when the cache is configured
        raise RuntimeError("no pull-through cache configured")
    return proxy


async def get_manifest(request: Request) -> Response:
    repo = repository(request)
    manifests.path_reference(request)  # a malformed tag or digest is a 400 before anything is asked upstream
    stored = await pull_through(request).manifest(repo, request.path_params["reference"])
    return manifests.manifest_response(request, stored)


async def get_blob(request: Request) -> Response:
    """A cached blob as a local one (ranges, redirects, sendfile). On a miss: the first request streams
    the upstream's bytes while they are stored (registry.proxy.tee); requests meanwhile for the same
    blob, ranges and HEADs wait for that fetch, then are served from the store."""
    proxy = pull_through(request)
    repo = repository(request)
    digest = path_digest(request)
    upstream, remote = proxy.source(repo)
    if await run_small(request, repo.blobs.has, digest) or await run(repo.blobs.adopt_existing, digest):
        if proxy.touches.due("blob", repo.name, digest):
            await run(repo.blobs.touch, digest)
        proxy.observe(upstream.host, "blob", HIT)
        return await blobs.get_blob(request)
    key = ("blob", str(digest))
    running = proxy.flights.join(key)
    if running is None and request.method == "HEAD":  # what the upstream says, without fetching
        size = await proxy.blob_size(upstream, remote, repo, digest)
        return Response(status_code=200, headers={**blobs.blob_headers(digest), "Content-Length": str(size)})
    if running is None and request.method == "GET" and "range" not in request.headers:
        stream = client_stream(request.scope)
        task, started = proxy.flights.start(key, _fetch(proxy, upstream, remote, repo, digest, stream))
        if started:
            return TeeResponse(stream, blobs.blob_headers(digest), lambda: blobs.get_blob(request))
        running = task
    if running is None:
        running, _ = proxy.flights.start(key, _fetch(proxy, upstream, remote, repo, digest, None))
    await asyncio.shield(running)
    await run(repo.blobs.adopt_existing, digest)  # fetched into another repository's name: link it here too
    return await blobs.get_blob(request)


def _fetch(proxy: PullThrough, upstream: Upstream, remote: str, repo: Repository, digest: Digest,
           stream: ClientStream | None) -> Callable[[], Awaitable[None]]:
    """The flight's job: the blob fetched into the store (a miss, told once per fetch)."""
    async def fetch() -> None:
        proxy.observe(upstream.host, "blob", MISS)
        try:
            await run(fetch_into, upstream, remote, repo, digest, stream)
        except RegistryError as exc:  # the upstream's failure as the answer (its 404: BLOB_UNKNOWN)
            if exc.code is not ErrorCode.BLOB_UNKNOWN:
                proxy.observe(upstream.host, "blob", UPSTREAM_ERROR)
            raise

    return fetch


async def list_tags(request: Request) -> Response:
    ctx = context(request)
    repo = repository(request)
    tags = await pull_through(request).tags(repo)
    page, link = paginate(tags, request, ctx.settings.limits.max_page_size, f"/v2/{repo.name}/tags/list")
    return json_response({"name": repo.name, "tags": page}, {"Link": link} if link else None)
