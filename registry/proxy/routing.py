"""Which repository a request means. A cached upstream repository has one canonical name,
`<upstream host>/<upstream name>` (`docker.io/library/redis`), and this module rewrites the three
ways clients name it to that one before routing, so access rules, storage, errors and the catalog
only ever see canonical names:

1. `?ns=docker.io` (containerd's and puller's mirrors): `/v2/library/redis/…` → `/v2/docker.io/library/redis/…`;
   the answer carries `OCI-Namespace`. An `ns` naming no configured upstream is ignored as
   distribution-spec allows: the request is served from local repositories only.
2. a host prefix (registries.conf mirrors, people): `/v2/docker.io/redis/…` → `/v2/docker.io/library/redis/…`.
3. neither (Docker Engine's `registry-mirrors`), for pulls (GET, HEAD) only: a local repository
   when `proxy.local` matches the name or the repository exists here, else the default upstream.
   A push or delete without a prefix is always local.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ocispec.errors import OCIValidationError
from ocispec.reference import DEFAULT_DOMAIN, LEGACY_DOMAINS, OFFICIAL_PREFIX, validate_repository_name

from ..auth.rules import compile_pattern
from ..settings import ProxySettings

#: `/v2/<name>/<what>`, split as the route table does (uploads before blobs).
_REPOSITORY_PATH = re.compile(
    r"^/v2/(?P<name>.+?)/(?P<rest>blobs/uploads/[^/]*|blobs/[^/]+|manifests/[^/]+|tags/list|referrers/[^/]+)$")
_PULLS = frozenset({"GET", "HEAD"})
NAMESPACE_HEADER = b"oci-namespace"


@dataclass(frozen=True)
class Target:
    """What a request's name means: the canonical repository name, and the upstream host when it is a
    cached upstream repository (None: a local one)."""

    name: str
    upstream: str | None


class NameRouter:
    """The naming rules of `proxy` settings: upstream hosts, the default, the local globs."""

    def __init__(self, proxy: ProxySettings) -> None:
        self.hosts = frozenset(u.host for u in proxy.upstreams)
        self.default = proxy.default or None
        self._local = tuple(compile_pattern(p) for p in proxy.local)

    def canonical(self, host: str, name: str) -> str:
        """`name` as upstream `host` knows it, prefixed: Docker Hub's one-component names are `library/…`."""
        if host == DEFAULT_DOMAIN and "/" not in name:
            name = OFFICIAL_PREFIX + name
        return f"{host}/{name}"

    def upstream_of(self, name: str) -> str | None:
        """The upstream host a canonical name belongs to, or None for a local repository."""
        first = name.split("/", 1)[0]
        return first if first in self.hosts and "/" in name else None

    def is_local(self, name: str) -> bool:
        return any(p.fullmatch(name) for p in self._local)

    def target(self, name: str, ns: str | None, method: str, exists_locally: Callable[[str], bool]) -> Target:
        """Where a request for `name` (as the client sent it) goes; `exists_locally` is asked only
        for a pull that names neither an `ns` nor a host prefix."""
        if ns is not None:
            host = DEFAULT_DOMAIN if ns in LEGACY_DOMAINS else ns
            if host in self.hosts:
                return Target(self.canonical(host, name), host)
            return Target(name, None)  # an ns we cache nothing for: local content only
        upstream = self.upstream_of(name)
        if upstream is not None:
            return Target(self.canonical(upstream, name.split("/", 1)[1]), upstream)
        if (method in _PULLS and self.default is not None and not self.is_local(name)
                and not exists_locally(name)):
            return Target(self.canonical(self.default, name), self.default)
        return Target(name, None)


def _valid(name: str) -> bool:
    try:
        validate_repository_name(name)
    except OCIValidationError:
        return False
    return True


class ProxyRouting:
    """ASGI middleware: rewrites the path of a request for a cached upstream repository to its
    canonical name (module docstring) and adds `OCI-Namespace` to answers of `ns` requests.
    `exists_locally(name)` may block on storage: it is awaited through `run_exists`."""

    def __init__(self, app: ASGIApp, router: NameRouter, run_exists: Callable[[str], Awaitable[bool]]) -> None:
        self.app = app
        self.router = router
        self.run_exists = run_exists

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        match = _REPOSITORY_PATH.match(scope["path"])
        if match is None or not _valid(match["name"]):
            await self.app(scope, receive, send)  # the handlers answer NAME_INVALID and the like
            return
        name, rest = match["name"], match["rest"]
        ns_values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("ns")
        ns = ns_values[0].strip().lower() if ns_values else None
        known: dict[str, bool] = {}
        method = scope["method"]
        needs_lookup = (ns is None and self.router.upstream_of(name) is None and method in _PULLS
                        and self.router.default is not None and not self.router.is_local(name))
        if needs_lookup:
            known[name] = await self.run_exists(name)
        target = self.router.target(name, ns, method, lambda n: known.get(n, False))
        if target.name != name:
            if not _valid(target.name):
                await self.app(scope, receive, send)
                return
            path = f"/v2/{target.name}/{rest}"
            scope = {**scope, "path": path, "raw_path": quote(path).encode()}
        if ns is None or target.upstream is None:
            await self.app(scope, receive, send)
            return
        namespace = target.upstream.encode()

        async def with_namespace(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (NAMESPACE_HEADER, namespace)]}
            await send(message)

        await self.app(scope, receive, with_namespace)
