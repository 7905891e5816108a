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
from .events import Event
from .handlers import base, blobs, catalog, health, manifests, referrers, tags, uploads
from .proxy import cached_blob, cached_manifest, cached_tags
from .requestinfo import request_info

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    handler: Handler
    needs: AccessRule
    removes_content: bool = False  # a delete of blobs, manifests or tags: only with storage.delete.enabled
    #: The handler for a cached upstream repository's name (registry.proxy); None: refused there
    #: (405 UNSUPPORTED), which is what every write gets.
    cached: Handler | None = None
    #: "manifest" or "blob": a GET answered 200/206 is a `<pulls>.pull` event (registry.events),
    #: told from the answer's headers, local or cached alike.
    pulls: str | None = None


#: What a method does to the repository it names (the request's `action`, in logs and metrics).
_ACTIONS = {"GET": PULL, "HEAD": PULL, "PUT": PUSH, "POST": PUSH, "PATCH": PUSH, "DELETE": DELETE}


def guard(endpoint: Endpoint) -> Handler:
    if endpoint.needs is access.public:
        return endpoint.handler  # no Authorizer: not even the anonymous challenge

    async def guarded(request: Request) -> Response:
        ctx = context(request)
        name = request.path_params.get("name")
        try:
            await ctx.authorizer.authorize(request, endpoint.needs(request))  # first: a stranger learns nothing
            upstream = ctx.proxy.upstream_of(name) if ctx.proxy is not None and name else None
            if upstream is not None:
                if endpoint.cached is None:
                    raise RegistryError(ErrorCode.UNSUPPORTED, f"{name} is cached from the upstream {upstream.host} "
                                        f"({upstream.url}): it cannot be pushed to or deleted here; push to a name "
                                        f"without the {upstream.host}/ prefix, or to the upstream itself", status=405)
                response = await endpoint.cached(request)
            else:
                if endpoint.removes_content and not ctx.settings.storage.delete.enabled:
                    raise RegistryError(ErrorCode.UNSUPPORTED, "deletes are disabled on this registry", status=405)
                response = await endpoint.handler(request)
        except RegistryError as exc:
            action = _ACTIONS.get(request.method)
            if exc.status == 403 and name and action in (PUSH, DELETE):  # the rules, immutable tags, quotas
                await ctx.events.emit(request, Event(f"{action}.refused", repository=name, detail=exc.message))
            raise
        if endpoint.pulls is not None and request.method == "GET" and response.status_code in (200, 206):
            await _pulled(request, endpoint.pulls, name or "", response)
        return response

    guarded.__name__ = endpoint.handler.__name__
    return guarded


async def _pulled(request: Request, kind: str, name: str, response: Response) -> None:
    events = context(request).events
    action = f"{kind}.pull"
    if not events.wants(action):
        return
    reference = request.path_params.get("reference", "")
    headers = response.headers
    length = headers.get("content-length", "")
    await events.emit(request, Event(action, repository=name, digest=headers.get("docker-content-digest", ""),
                                     tag=reference if reference and ":" not in reference else "",
                                     media_type=headers.get("content-type", "") if kind == "manifest" else "",
                                     size=int(length) if length.isdigit() else 0))


def _dispatch(path: str, methods: dict[str, Endpoint]) -> Handler:
    guarded = {method: guard(endpoint) for method, endpoint in methods.items()}
    # Starlette lets HEAD through wherever GET is allowed: answer it as GET does (the server sends
    # no body for HEAD), with GET's access rule.
    if "GET" in guarded:
        guarded.setdefault("HEAD", guarded["GET"])
    names_a_repository = "{name" in path
    template = path.replace(":path}", "}")  # `/v2/{name}/blobs/{digest}`: what a person reads in a label

    async def by_method(request: Request) -> Response:
        info = request_info(request)
        info.route = template
        if names_a_repository:
            info.repository = request.path_params.get("name", "")
            info.action = _ACTIONS.get(request.method, "")
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
        "GET": Endpoint(blobs.get_blob, pull, cached=cached_blob, pulls="blob"),
        "HEAD": Endpoint(blobs.get_blob, pull, cached=cached_blob),
        "DELETE": Endpoint(blobs.delete_blob, delete, removes_content=True),
    }),
    ("/v2/{name:path}/manifests/{reference}", {
        "GET": Endpoint(manifests.get_manifest, pull, cached=cached_manifest, pulls="manifest"),
        "HEAD": Endpoint(manifests.get_manifest, pull, cached=cached_manifest),
        "PUT": Endpoint(manifests.put_manifest, access.repository(PULL, PUSH)),
        "DELETE": Endpoint(manifests.delete_manifest, delete, removes_content=True),
    }),
    ("/v2/{name:path}/tags/list", {"GET": Endpoint(tags.list_tags, pull, cached=cached_tags)}),
    # A cached repository's referrers are those of what the cache holds (none are fetched upstream).
    ("/v2/{name:path}/referrers/{digest}", {"GET": Endpoint(referrers.referrers, pull, cached=referrers.referrers)}),
]


def routes() -> list[Route]:
    return [Route(path, _dispatch(path, methods), methods=list(methods)) for path, methods in TABLE]


def declared_access() -> dict[tuple[str, str], AccessRule]:
    """(path, method) → access rule, for tests and documentation."""
    return {(path, method): ep.needs for path, methods in TABLE for method, ep in methods.items()}
