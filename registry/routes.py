"""The one route table: every path, method, handler and the access it needs.

Each route goes through `guard`, which asks the app's Authorizer before the handler runs, so
authentication plugs in without touching any handler; routes that remove content are refused there
too (405 UNSUPPORTED) unless `storage.delete.enabled`. A name that belongs to a cached upstream
(registry.proxy) goes to the route's `cached` handler; routes without one (every write) refuse it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ocispec.errors import ErrorCode

from . import access
from .access import DELETE, PULL, PUSH, AccessRule
from .context import context
from .errors import RegistryError
from .handlers import base, blobs, catalog, health, manifests, referrers, tags, uploads
from .proxy import cached_blob, cached_manifest, cached_tags

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    handler: Handler
    needs: AccessRule
    removes_content: bool = False  # a delete of blobs, manifests or tags: only with storage.delete.enabled
    #: The handler for a cached upstream repository's name (registry.proxy); None: refused there
    #: (405 UNSUPPORTED), which is what every write gets.
    cached: Handler | None = None


def guard(endpoint: Endpoint) -> Handler:
    if endpoint.needs is access.public:
        return endpoint.handler  # no Authorizer: not even the anonymous challenge

    async def guarded(request: Request) -> Response:
        ctx = context(request)
        await ctx.authorizer.authorize(request, endpoint.needs(request))  # first: a stranger learns nothing
        name = request.path_params.get("name")
        upstream = ctx.proxy.upstream_of(name) if ctx.proxy is not None and name else None
        if upstream is not None:
            if endpoint.cached is None:
                raise RegistryError(ErrorCode.UNSUPPORTED, f"{name} is cached from the upstream {upstream.host} "
                                    f"({upstream.url}): it cannot be pushed to or deleted here; push to a name "
                                    f"without the {upstream.host}/ prefix, or to the upstream itself", status=405)
            return await endpoint.cached(request)
        if endpoint.removes_content and not ctx.settings.storage.delete.enabled:
            raise RegistryError(ErrorCode.UNSUPPORTED, "deletes are disabled on this registry", status=405)
        return await endpoint.handler(request)

    guarded.__name__ = endpoint.handler.__name__
    return guarded


def _dispatch(methods: dict[str, Endpoint]) -> Handler:
    guarded = {method: guard(endpoint) for method, endpoint in methods.items()}
    # Starlette lets HEAD through wherever GET is allowed: answer it as GET does (the server sends
    # no body for HEAD), with GET's access rule.
    if "GET" in guarded:
        guarded.setdefault("HEAD", guarded["GET"])

    async def by_method(request: Request) -> Response:
        return await guarded[request.method](request)

    return by_method


pull, push, delete = access.repository(PULL), access.repository(PUSH), access.repository(DELETE)

# Order matters: upload paths before blob paths, `_catalog` before repository paths.
TABLE: list[tuple[str, dict[str, Endpoint]]] = [
    ("/healthz", {"GET": Endpoint(health.healthz, access.public), "HEAD": Endpoint(health.healthz, access.public)}),
    ("/v2/", {"GET": Endpoint(base.version_check, access.anyone),
              "HEAD": Endpoint(base.version_check, access.anyone)}),
    ("/v2/_catalog", {"GET": Endpoint(catalog.catalog, access.catalog)}),
    ("/v2/{name:path}/blobs/uploads/", {"POST": Endpoint(uploads.start_upload, access.repository(PULL, PUSH))}),
    ("/v2/{name:path}/blobs/uploads/{upload_id}", {
        "GET": Endpoint(uploads.upload_status, push),
        "PATCH": Endpoint(uploads.patch_upload, push),
        "PUT": Endpoint(uploads.finish_upload, push),
        "DELETE": Endpoint(uploads.cancel_upload, push),
    }),
    ("/v2/{name:path}/blobs/{digest}", {
        "GET": Endpoint(blobs.get_blob, pull, cached=cached_blob),
        "HEAD": Endpoint(blobs.get_blob, pull, cached=cached_blob),
        "DELETE": Endpoint(blobs.delete_blob, delete, removes_content=True),
    }),
    ("/v2/{name:path}/manifests/{reference}", {
        "GET": Endpoint(manifests.get_manifest, pull, cached=cached_manifest),
        "HEAD": Endpoint(manifests.get_manifest, pull, cached=cached_manifest),
        "PUT": Endpoint(manifests.put_manifest, access.repository(PULL, PUSH)),
        "DELETE": Endpoint(manifests.delete_manifest, delete, removes_content=True),
    }),
    ("/v2/{name:path}/tags/list", {"GET": Endpoint(tags.list_tags, pull, cached=cached_tags)}),
    # A cached repository's referrers are those of what the cache holds (none are fetched upstream).
    ("/v2/{name:path}/referrers/{digest}", {"GET": Endpoint(referrers.referrers, pull, cached=referrers.referrers)}),
]


def routes() -> list[Route]:
    return [Route(path, _dispatch(methods), methods=list(methods)) for path, methods in TABLE]


def declared_access() -> dict[tuple[str, str], AccessRule]:
    """(path, method) → access rule, for tests and documentation."""
    return {(path, method): ep.needs for path, methods in TABLE for method, ep in methods.items()}
